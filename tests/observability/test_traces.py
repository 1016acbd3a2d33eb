"""Traces end to end: a real ``hangar serve`` exporting over OTLP/HTTP (the real OpenTelemetry exporter) to a real
receiver (``tests/support/otlp.py``, the official protobuf messages), invoked through boto3.

What is proven: one invoke gives a server span with the runtime, session and qualifier, and children for
authentication (with version resolution inside it), the session start (its start kind: cold, then warm), the agent
call (a client span, GenAI ``invoke_agent``) and the stream; a client's ``traceparent`` (boto3 ``traceParent``)
or ``X-Amzn-Trace-Id`` (boto3 ``traceId``) becomes the parent; an agent instrumented with opentelemetry-sdk gets
both headers for the agent-call span and its own spans (hangar.sdk's handler span, then the agent's) join the
trace under it. Sessions run on the process backend: the agent exports to the receiver on the host's loopback,
which a namespace sandbox cannot reach (its network is its own).
"""

from __future__ import annotations

import asyncio
import json
import secrets
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

import httpx
import pytest
import websockets
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials

from tests.dataplane.support import deploy, new_session_id, seeded_server, wait_for
from tests.protocols.support import SigV4Httpx, admin_key, invocations_url
from tests.support.otlp import OtlpReceiver, ReceivedSpan
from tests.support.server import HangarServer, read_admin_key

SESSION_HEADER = "X-Amzn-Bedrock-AgentCore-Runtime-Session-Id"
ROUTE = "POST /runtimes/{agentRuntimeArn}/invocations"
WS_ROUTE = "GET /runtimes/{agentRuntimeArn}/ws"


@dataclass
class Traced:
    server: HangarServer
    receiver: OtlpReceiver
    runtime: dict[str, Any]

    def invoke(self, session_id: str, runtime: dict[str, Any] | None = None, **trace: str) -> dict[str, Any]:
        data = self.server.boto3_client("bedrock-agentcore")
        answer = data.invoke_agent_runtime(
            agentRuntimeArn=(runtime or self.runtime)["agentRuntimeArn"],
            runtimeSessionId=session_id,
            payload=json.dumps({"prompt": "hello"}),
            **trace,
        )
        result: dict[str, Any] = json.loads(answer["response"].read())
        return result

    def stop(self, session_id: str, runtime: dict[str, Any] | None = None) -> None:
        """The process backend runs one session per contract port: each test stops what it started."""
        data = self.server.boto3_client("bedrock-agentcore")
        arn = (runtime or self.runtime)["agentRuntimeArn"]
        data.stop_runtime_session(agentRuntimeArn=arn, runtimeSessionId=session_id)

    def server_span(self, session_id: str, count: int = 1, route: str = ROUTE) -> list[ReceivedSpan]:
        """The gateway's server spans of this session, once ``count`` of them (and their children) arrived."""

        def found() -> list[ReceivedSpan] | None:
            spans = [
                s
                for s in list(self.receiver.spans)
                if s.name == route and s.attributes.get("aws.agentcore.runtime_session_id") == session_id
            ]
            return spans if len(spans) >= count else None

        return sorted(wait_for(found, timeout=30), key=lambda s: s.start_ns)

    def children(self, parent: ReceivedSpan, expected: int) -> dict[str, ReceivedSpan]:
        def found() -> dict[str, ReceivedSpan] | None:
            spans = {s.name: s for s in self.receiver.trace(parent.trace_id) if s.parent_id == parent.span_id}
            return spans if len(spans) >= expected else None

        return wait_for(found, timeout=30)


@pytest.fixture(scope="module")
def traced() -> Iterator[Traced]:
    with OtlpReceiver() as receiver:
        env = {
            "HANGAR_SANDBOX_BACKEND": "process",
            "HANGAR_OTLP_ENDPOINT": receiver.endpoint,
            "OTEL_BSP_SCHEDULE_DELAY": "100",  # export batches every 100 ms, not every 5 s
        }
        with seeded_server("hangar-traces-", ("tracedagent", "realsdktraced", "mcp_server"), env=env) as server:
            control = server.boto3_client("bedrock-agentcore-control")
            runtime = deploy(
                control, "tracedagent", environmentVariables={"OTEL_EXPORTER_OTLP_ENDPOINT": receiver.endpoint}
            )
            yield Traced(server, receiver, runtime)


@pytest.fixture
def session_id(traced: Traced) -> Iterator[str]:
    session_id = new_session_id()
    yield session_id
    traced.stop(session_id)


def test_an_invoke_gives_a_server_span_with_its_steps(traced: Traced, session_id: str) -> None:
    traced.invoke(session_id)
    traced.invoke(session_id)
    first, second = traced.server_span(session_id, count=2)
    assert first.kind == "SERVER" and first.parent_id == "" and not first.error
    assert first.attributes["aws.agentcore.runtime_arn"] == traced.runtime["agentRuntimeArn"]
    assert first.attributes["aws.agentcore.qualifier"] == "DEFAULT"
    assert first.attributes["http.request.method"] == "POST"
    assert first.attributes["http.response.status_code"] == 200
    assert first.attributes["gen_ai.operation.name"] == "invoke_agent"
    assert first.attributes["gen_ai.agent.id"] == traced.runtime["agentRuntimeId"]
    assert first.service == "hangar"

    steps = traced.children(first, expected=4)
    assert {"hangar.auth", "hangar.session.start", "hangar.stream"} <= set(steps)
    call = steps[f"invoke_agent {traced.runtime['agentRuntimeName']}"]
    assert call.kind == "CLIENT" and call.attributes["gen_ai.agent.name"] == traced.runtime["agentRuntimeName"]
    resolution = traced.children(steps["hangar.auth"], expected=1)
    assert "hangar.resolve_version" in resolution
    assert steps["hangar.session.start"].attributes["hangar.session.start_kind"] == "cold"
    phases = traced.children(steps["hangar.session.start"], expected=2)  # a cold start's phases, in order
    assert set(phases) == {"hangar.session.launch", "hangar.session.wait_ready"}
    assert phases["hangar.session.launch"].end_ns <= phases["hangar.session.wait_ready"].start_ns
    # every step lies within the server span, which ends with the stream
    for step in steps.values():
        assert first.start_ns <= step.start_ns <= step.end_ns <= first.end_ns
    assert steps["hangar.stream"].end_ns <= first.end_ns

    again = traced.children(second, expected=4)
    assert again["hangar.session.start"].attributes["hangar.session.start_kind"] == "warm"
    started = again["hangar.session.start"].span_id  # a running session: no phases (they export before their parent)
    assert [s.name for s in traced.receiver.trace(second.trace_id) if s.parent_id == started] == []
    assert second.trace_id != first.trace_id  # no client context: each invoke is its own trace


def test_a_client_traceparent_becomes_the_parent(traced: Traced, session_id: str) -> None:
    trace_id, parent_id = secrets.token_hex(16), secrets.token_hex(8)
    traced.invoke(session_id, traceParent=f"00-{trace_id}-{parent_id}-01")
    (span,) = traced.server_span(session_id)
    assert (span.trace_id, span.parent_id) == (trace_id, parent_id)


def test_a_client_x_amzn_trace_id_becomes_the_parent(traced: Traced, session_id: str) -> None:
    trace_id, parent_id = secrets.token_hex(16), secrets.token_hex(8)
    traced.invoke(session_id, traceId=f"Root=1-{trace_id[:8]}-{trace_id[8:]};Parent={parent_id};Sampled=1")
    (span,) = traced.server_span(session_id)
    assert (span.trace_id, span.parent_id) == (trace_id, parent_id)


def test_an_unsampled_client_context_exports_nothing(traced: Traced) -> None:
    trace_id, parent_id = secrets.token_hex(16), secrets.token_hex(8)
    sampled_session, unsampled_session = new_session_id(), new_session_id()
    traced.invoke(unsampled_session, traceParent=f"00-{trace_id}-{parent_id}-00")
    traced.stop(unsampled_session)
    traced.invoke(sampled_session)
    traced.stop(sampled_session)
    traced.server_span(sampled_session)  # exported after the unsampled one would have been
    assert traced.receiver.trace(trace_id) == []


def test_the_agent_spans_join_the_trace_under_the_agent_call(traced: Traced, session_id: str) -> None:
    seen = traced.invoke(session_id)["seen"]
    (span,) = traced.server_span(session_id)
    call = traced.children(span, expected=4)[f"invoke_agent {traced.runtime['agentRuntimeName']}"]
    # the headers the agent got name the agent-call span, in both formats
    version, trace_id, parent_id, flags = seen["traceparent"].split("-")
    assert (version, trace_id, parent_id) == ("00", span.trace_id, call.span_id)
    assert int(flags, 16) & 1  # sampled (the SDK may also set W3C's random-trace-id flag)
    assert seen["x-amzn-trace-id"] == f"Root=1-{trace_id[:8]}-{trace_id[8:]};Parent={call.span_id};Sampled=1"

    handler = traced.children(call, expected=1)["invoke_agent"]  # hangar.sdk's span, exported by the agent
    assert handler.service == "traced-agent" and handler.kind == "SERVER"
    assert handler.attributes["session.id"] == session_id
    work = traced.children(handler, expected=1)["agent.work"]  # the agent's own span, under the SDK's
    assert work.attributes["agent.prompt"] == "hello"


def test_a_websocket_is_one_server_span_with_the_agent_inside(traced: Traced, session_id: str) -> None:
    url = f"ws://127.0.0.1:{traced.server.port}/runtimes/{quote(traced.runtime['agentRuntimeArn'], safe='')}/ws"
    key_id, secret = read_admin_key(traced.server.credentials_file)
    signing = AWSRequest(method="GET", url=url.replace("ws://", "http://"), headers={SESSION_HEADER: session_id})
    SigV4Auth(Credentials(key_id, secret), "bedrock-agentcore", "us-west-2").add_auth(signing)
    headers = {k: v for k, v in signing.headers.items() if k.lower() != "host"}

    async def talk() -> str:
        async with websockets.connect(url, additional_headers=headers) as ws:
            await ws.send("hi")
            return str(await ws.recv())

    traceparent, said = asyncio.run(talk()).split(" ")
    assert said == "hi"
    (span,) = traced.server_span(session_id, route=WS_ROUTE)  # exported once the WebSocket closed
    steps = traced.children(span, expected=3)
    call = steps[f"invoke_agent {traced.runtime['agentRuntimeName']}"]
    assert traceparent.split("-")[1:3] == [span.trace_id, call.span_id]
    assert call.end_ns <= span.end_ns


def test_an_agent_on_the_real_sdk_instrumented_like_adot_joins_the_trace(traced: Traced) -> None:
    control = traced.server.boto3_client("bedrock-agentcore-control")
    runtime = deploy(
        control, "realsdktraced", environmentVariables={"OTEL_EXPORTER_OTLP_ENDPOINT": traced.receiver.endpoint}
    )
    session_id = new_session_id()
    try:
        assert traced.invoke(session_id, runtime)["sdk"] == "bedrock-agentcore"
    finally:
        traced.stop(session_id, runtime)
    (span,) = traced.server_span(session_id)
    call = traced.children(span, expected=4)[f"invoke_agent {runtime['agentRuntimeName']}"]
    # Starlette's instrumentation (ADOT's, in AWS) makes the agent's server span from Hangar's traceparent
    (served,) = traced.children(call, expected=1).values()
    assert served.service == "real-sdk-agent" and served.kind == "SERVER"
    work = traced.children(served, expected=1)["realsdk.work"]
    assert work.trace_id == span.trace_id


def test_an_mcp_request_is_traced_like_an_invoke(traced: Traced) -> None:
    control = traced.server.boto3_client("bedrock-agentcore-control")
    runtime = deploy(control, "mcp_server", protocolConfiguration={"serverProtocol": "MCP"})
    session_id = new_session_id()
    rpc = json.dumps({"jsonrpc": "2.0", "id": 1, "method": "tools/list", "params": {}}).encode()
    headers = {
        "Content-Type": "application/json",
        "Accept": "application/json, text/event-stream",
        SESSION_HEADER: session_id,
    }
    try:
        with httpx.Client(auth=SigV4Httpx(admin_key(traced.server)), timeout=60) as http:
            answer = http.post(invocations_url(traced.server, runtime), headers=headers, content=rpc)
        assert answer.status_code == 200, answer.text
    finally:
        traced.stop(session_id, runtime)
    (span,) = traced.server_span(session_id)
    assert span.attributes["hangar.protocol"] == "MCP"
    steps = traced.children(span, expected=4)
    assert steps[f"invoke_agent {runtime['agentRuntimeName']}"].kind == "CLIENT"
    assert steps["hangar.session.start"].attributes["hangar.session.start_kind"] == "cold"
