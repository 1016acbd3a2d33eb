"""The requests sent to both SDKs by the differential test, and the differences we chose on purpose.

Each ``Case`` is a short script of requests against one agent flavour (see ``agents.FLAVOURS``); the outcomes of
the whole script are compared. A case with a ``Difference`` is one where Hangar deliberately departs from the
reference SDK (each is written down in docs/sdk.md); for those both sides are pinned to their expected outcomes.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

SESSION = "session-0123456789-0123456789-0123456789"
REQUEST_ID = "req-fixed-42"
JSON = "application/json"
SSE = "text/event-stream; charset=utf-8"


@dataclass(frozen=True)
class Req:
    method: str = "POST"
    path: str = "/invocations"
    body: bytes | None = None
    headers: tuple[tuple[str, str | bytes], ...] = ()


def post(payload: Any, *headers: tuple[str, str | bytes]) -> Req:
    return Req(body=json.dumps(payload).encode(), headers=(("content-type", JSON), *headers))


def raw(body: bytes, *headers: tuple[str, str | bytes]) -> Req:
    return Req(body=body, headers=headers)


def kind(name: str, **extra: Any) -> Req:
    return post({"kind": name, **extra})


PING = Req(method="GET", path="/ping")


@dataclass(frozen=True)
class Outcome:
    status: int
    content_type: str | None
    body: str


@dataclass(frozen=True)
class Difference:
    why: str
    reference: tuple[Outcome, ...]
    hangar: tuple[Outcome, ...]


@dataclass(frozen=True)
class Case:
    name: str
    flavour: str
    steps: tuple[Req, ...]
    difference: Difference | None = field(default=None)


def case(name: str, flavour: str, *steps: Req, difference: Difference | None = None) -> Case:
    return Case(name=name, flavour=flavour, steps=steps, difference=difference)


def ok_json(body: str) -> Outcome:
    return Outcome(200, JSON, body)


# Results both SDKs encode identically (see agents.value_results()).
PLAIN_RESULTS = (
    *("str", "none", "int", "float", "bool", "list", "tuple", "set"),
    *("unicode", "pydantic", "dataclass", "nested", "opaque", "nan"),
)

# What both SDKs send for agents.stream_items() up to its last item (a bytes value, encoded differently).
STREAM_ITEMS_WIRE = (
    'data: "hi"\n\ndata: "data: already-sse\\n\\n"\n\ndata: {"u": "漢字"}\n\ndata: null\n\n'
    'data: [1, 2]\n\ndata: {"x": 3, "y": 4}\n\n'
)

FORWARDING_HEADERS: tuple[tuple[str, str | bytes], ...] = (
    ("X-Amzn-Bedrock-AgentCore-Runtime-Session-Id", SESSION),
    ("X-Amzn-Bedrock-AgentCore-Runtime-Request-Id", REQUEST_ID),
    ("X-My-Header", "mine"),
    ("authorization", "Bearer secret-token"),
    ("X-Amzn-Bedrock-AgentCore-Runtime-Custom-Tenant", "acme"),
    ("X-Amzn-Trace-Id", "Root=1-abc"),
    ("X-Amz-Date", "20240101T000000Z"),
    ("X-Amz-Security-Token", "sigv4-material"),
    ("X-Amz-Bedrock-AgentCore-Identity-WAT", "wat-from-identity-header"),
    ("WorkloadAccessToken", "wat-from-plain-header"),
    ("OAuth2CallbackUrl", "https://example.com/callback"),
    ("Cookie", "a=b"),
    ("X-Forwarded-For", "10.0.0.1"),
    ("Origin", "https://evil.example"),
    ("Sec-WebSocket-Key", "not-a-websocket"),
    ("traceparent", "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"),
    (
        "baggage",
        "aws.agentcore.gateway.routing_experiment_arn=arn%3Aexp,"
        "aws.agentcore.gateway.routing_experiment_variant_name=blue;prop=1,junk",
    ),
)

HTTP_CASES: tuple[Case, ...] = (
    # Payload kinds: any JSON value reaches the handler unchanged.
    case("json_object", "sync", post({"a": 1, "b": [True, None]})),
    case("json_list", "sync", post([1, 2, 3])),
    case("json_string", "sync", post("just a string")),
    case("json_number", "sync", post(3.25)),
    case("json_null", "sync", post(None)),
    case("json_big_int", "sync", raw(b'{"n": 1000000000000000000000000000001}')),
    case("json_infinity_literal", "sync", raw(b'{"x": 1e400, "y": NaN}')),
    case("unicode_raw_utf8", "sync", raw('{"u": "é漢字🚀"}'.encode())),
    case("unicode_escaped", "sync", raw(b'{"u": "\\u00e9\\ud83d\\ude80"}')),
    case("utf16_with_bom", "sync", raw('{"u": "é"}'.encode("utf-16"))),
    case("text_plain_content_type", "sync", raw(b'{"ok": true}', ("content-type", "text/plain"))),
    case("no_content_type", "sync", raw(b'{"ok": true}')),
    case("large_body_1mb", "sync", post({"blob": "x" * 1_000_000})),
    case("deep_but_legal_nesting", "sync", raw(b"[" * 200 + b"]" * 200)),
    # Bodies that are not JSON.
    case("invalid_json", "sync", raw(b"{not json")),
    case("empty_body", "sync", raw(b"")),
    case("whitespace_body", "sync", raw(b"   \n")),
    case("trailing_garbage", "sync", raw(b'{"a": 1} trailing')),
    case("bad_utf8", "sync", raw(b'{"a": "\xff\xfe"}')),
    case("bad_utf8_no_entrypoint", "bare", raw(b"\xc3\x28")),
    case(
        "nesting_too_deep",
        "sync",
        raw(b"[" * 100_000 + b"]" * 100_000),
        difference=Difference(
            why="hostile nesting is a client error (400 Invalid JSON), not an unhandled 500 text/plain",
            reference=(Outcome(500, "text/plain; charset=utf-8", "Internal Server Error"),),
            hangar=(Outcome(400, JSON, '{"error":"Invalid JSON","details":"nesting too deep"}'),),
        ),
    ),
    # Return values and their encoding.
    *(case(f"result_{name}", "sync", kind(name)) for name in PLAIN_RESULTS),
    case(
        "result_bytes",
        "sync",
        kind("bytes"),
        difference=Difference(
            why="bytes are sent as they are, not as the Python repr \"b'abc'\"",
            reference=(ok_json("\"b'abc'\""),),
            hangar=(Outcome(200, "application/octet-stream", "abc"),),
        ),
    ),
    case(
        "result_nested_bytes",
        "sync",
        kind("nested_bytes"),
        difference=Difference(
            why="bytes inside a JSON value become base64 text, not the repr of the whole result",
            reference=(ok_json("\"{'blob': b'\\\\x00\\\\xff'}\""),),
            hangar=(ok_json('{"blob": "AP8="}'),),
        ),
    ),
    case(
        "result_pydantic_datetime",
        "sync",
        kind("pydantic_datetime"),
        difference=Difference(
            why="pydantic models are dumped in JSON mode, so a datetime field is ISO text, not the model's repr",
            reference=(ok_json('"when=datetime.datetime(2024, 1, 2, 3, 4, 5)"'),),
            hangar=(ok_json('{"when": "2024-01-02T03:04:05"}'),),
        ),
    ),
    case(
        "result_lone_surrogate",
        "sync",
        kind("surrogate"),
        difference=Difference(
            why="a string that UTF-8 cannot carry is escaped (\\ud800) instead of failing the request with 500",
            reference=(
                Outcome(
                    500,
                    JSON,
                    "{\"error\":\"'utf-8' codec can't encode character '\\\\ud800' in position 7: "
                    'surrogates not allowed"}',
                ),
            ),
            hangar=(ok_json('{"s": "\\ud800"}'),),
        ),
    ),
    # Handler errors.
    case("handler_raises", "sync", kind("raise")),
    case(
        "error_message_lone_surrogate",
        "sync",
        kind("raise_surrogate"),
        difference=Difference(
            why="an error message UTF-8 cannot carry is escaped instead of escaping as a bare 500 text/plain",
            reference=(Outcome(500, "text/plain; charset=utf-8", "Internal Server Error"),),
            hangar=(Outcome(500, JSON, '{"error":"bad \\ud800 text"}'),),
        ),
    ),
    case("http_exception", "sync", kind("http_exception")),
    case("http_exception_default_detail", "sync", kind("http_exception_no_detail")),
    case("response_passthrough", "sync", kind("response")),
    case("text_response_passthrough", "sync", kind("text_response")),
    case("context_parameter_misnamed", "ctxname", post({"a": 1})),
    case("no_entrypoint", "bare", post({"a": 1})),
    case("unknown_kind", "sync", kind("what-is-this")),
    # Async handlers.
    case("async_echo", "async", post({"é": ["ü", 1]})),
    case("async_raises", "async", kind("raise")),
    case("async_http_exception", "async", kind("http_exception")),
    case("async_pydantic", "async", kind("pydantic")),
    case("async_returns_sync_generator", "async", kind("stream", count=2)),
    case("async_returns_async_generator", "async", kind("astream", count=2, fail_at=1)),
    # Streaming.
    case("sync_generator", "syncgen", post({"count": 3})),
    case("sync_generator_empty", "syncgen", post({"count": 0})),
    case("sync_generator_error_mid_stream", "syncgen", post({"count": 5, "fail_at": 2})),
    case("sync_generator_error_before_first", "syncgen", kind("fail_first")),
    case(
        "sync_generator_item_kinds",
        "syncgen",
        kind("items"),
        difference=Difference(
            why="a bytes item is base64 text in its event, not its Python repr",
            reference=(Outcome(200, SSE, STREAM_ITEMS_WIRE + "data: \"b'raw'\"\n\n"),),
            hangar=(Outcome(200, SSE, STREAM_ITEMS_WIRE + 'data: "cmF3"\n\n'),),
        ),
    ),
    case("async_generator", "asyncgen", post({"count": 3})),
    case("async_generator_error_before_first", "asyncgen", kind("fail_first")),
    case("async_generator_session", "asyncgen", kind("session"), Req()),
    case("sync_function_returns_generator", "sync", kind("stream", count=3, fail_at=2)),
    case("sync_function_returns_async_generator", "sync", kind("astream", count=2)),
    # Headers and RequestContext.
    case("forwarded_and_restricted_headers", "sync", post({"kind": "headers"}, *FORWARDING_HEADERS)),
    case("no_forwardable_headers", "sync", kind("headers")),
    case("async_handler_headers", "async", post({"kind": "headers"}, *FORWARDING_HEADERS)),
    case("sync_generator_context_vars", "syncgen", post({"kind": "context_vars"}, *FORWARDING_HEADERS)),
    case("async_generator_context_vars", "asyncgen", post({"kind": "context_vars"}, *FORWARDING_HEADERS)),
    case("only_plain_workload_token", "sync", post({"kind": "headers"}, ("WorkloadAccessToken", "plain"))),
    case("duplicate_header_last_wins", "sync", post({"kind": "headers"}, ("X-Dup", "first"), ("X-Dup", "second"))),
    case("latin1_header_value", "sync", post({"kind": "headers"}, ("X-Weird", b"caf\xe9"))),
    case("long_header_value", "sync", post({"kind": "headers"}, ("X-Long", "v" * 6000))),
    case("empty_header_value", "sync", post({"kind": "headers"}, ("X-Empty", ""))),
    case("config_bundle_absent", "sync", kind("config_bundle_ref"), kind("config_bundle")),
    case(
        "config_bundle_ref_from_baggage",
        "sync",
        post(
            {"kind": "config_bundle_ref"},
            ("baggage", "aws.agentcore.configbundle_arn=arn%3Aaws%3Abundle%2Fb-1,aws.agentcore.configbundle_version=7"),
        ),
    ),
    case("malformed_baggage", "sync", post({"kind": "headers"}, ("baggage", ",,=x,k=,=,only-key"))),
    # Routing.
    case("get_invocations", "sync", Req(method="GET")),
    case("unknown_path", "sync", Req(method="GET", path="/nope")),
    case("head_ping", "sync", Req(method="HEAD", path="/ping")),
    case("post_ping", "sync", Req(method="POST", path="/ping")),
    case("ping_no_entrypoint", "bare", PING),
    # Ping status and async tasks.
    case(
        "custom_ping_values",
        "sync",
        PING,
        kind("set_ping", value="HealthyBusy"),
        PING,
        kind("ping_status"),
        kind("set_ping", value="Bogus"),
        PING,
        kind("set_ping", value="raise"),
        PING,
        kind("set_ping", value="enum"),
        PING,
        kind("set_ping", value=None),
        PING,
    ),
    case(
        "manual_async_task",
        "sync",
        kind("add_task"),
        PING,
        kind("task_info"),
        kind("complete_task"),
        kind("complete_task"),
        PING,
        kind("complete_unknown"),
    ),
    case(
        "coroutine_ping_function",
        "sync",
        kind("add_task"),
        kind("set_ping", value="coroutine"),
        PING,
        kind("set_ping", value=None),
        kind("complete_task"),
        difference=Difference(
            why="a ping function returning a coroutine is ignored like any failing one: automatic status applies",
            reference=(
                ok_json("false"),
                ok_json('"coroutine"'),
                ok_json('{"status":"Healthy","time_of_last_update":<ts>}'),
                ok_json("null"),
                ok_json("true"),
            ),
            hangar=(
                ok_json("false"),
                ok_json('"coroutine"'),
                ok_json('{"status":"HealthyBusy","time_of_last_update":<ts>}'),
                ok_json("null"),
                ok_json("true"),
            ),
        ),
    ),
    case("forced_ping_status", "sync", kind("force_busy"), PING, kind("clear_forced"), PING),
    case("async_task_decorator", "async", kind("spawn_job"), PING, kind("finish_job"), PING),
    # Debug actions.
    case("debug_ping_status", "debug", post({"_agent_core_app_action": "ping_status"})),
    case(
        "debug_job_status",
        "debug",
        kind("add_task"),
        post({"_agent_core_app_action": "job_status"}),
        kind("complete_task"),
        post({"_agent_core_app_action": "job_status"}),
    ),
    case(
        "debug_force_and_clear",
        "debug",
        post({"_agent_core_app_action": "force_busy"}),
        PING,
        post({"_agent_core_app_action": "force_healthy"}),
        PING,
        post({"_agent_core_app_action": "clear_forced_status"}),
        PING,
    ),
    case("debug_unknown_action", "debug", post({"_agent_core_app_action": "explode"})),
    case("debug_numeric_action", "debug", post({"_agent_core_app_action": 7})),
    case("debug_unhashable_action", "debug", post({"_agent_core_app_action": ["a"]})),
    case("debug_empty_action_reaches_handler", "debug", post({"_agent_core_app_action": "", "kind": "echo"})),
    case("debug_off_action_reaches_handler", "sync", post({"_agent_core_app_action": "ping_status"})),
    case(
        "debug_non_object_payload",
        "debug",
        post([1, 2]),
        difference=Difference(
            why="with debug=True a non-object payload still reaches the handler instead of failing with 500",
            reference=(Outcome(500, JSON, "{\"error\":\"'list' object has no attribute 'get'\"}"),),
            hangar=(ok_json('{"payload": [1, 2]}'),),
        ),
    ),
)


@dataclass(frozen=True)
class WsCase:
    """A WebSocket script: messages to send (text or bytes); the transcript of what comes back is compared."""

    name: str
    flavour: str
    messages: tuple[str | bytes, ...]
    headers: tuple[tuple[str, str | bytes], ...] = ()


WS_CASES: tuple[WsCase, ...] = (
    WsCase("ws_echo_text_and_bytes", "sync", ("hello", "é漢字", b"\x00\x01", "close:1000")),
    WsCase("ws_custom_close_code", "sync", ("close:4001",)),
    WsCase("ws_handler_raises", "sync", ("first", "raise")),
    WsCase("ws_session_and_headers", "sync", ("session", "close:1000"), FORWARDING_HEADERS[:5]),
    WsCase("ws_client_closes", "sync", ("one",)),
    WsCase("ws_no_handler", "bare", ("hello",)),
)
