"""Agents written once and built with either app class: ``hangar.sdk.AgentApp`` or the reference SDK's.

Everything here uses only the API both frameworks share, so the differential test can serve the very same agent
twice and compare what goes over the wire. A payload ``{"kind": ...}`` picks the behaviour.
"""

from __future__ import annotations

import asyncio
import dataclasses
import datetime
import threading
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

import pydantic
from starlette.exceptions import HTTPException
from starlette.responses import JSONResponse, PlainTextResponse
from starlette.websockets import WebSocket, WebSocketDisconnect

FLAVOURS = ("sync", "async", "syncgen", "asyncgen", "ctxname", "bare", "debug")
WAIT_LIMIT = 30.0  # seconds any agent-side wait may last, so a broken test cannot hang forever


class Reply(pydantic.BaseModel):
    text: str
    score: float


class Stamped(pydantic.BaseModel):
    when: datetime.datetime


@dataclasses.dataclass
class Point:
    x: int
    y: int


class Opaque:
    def __str__(self) -> str:
        return "opaque-thing"


@dataclasses.dataclass
class AgentState:
    """Mutable cells an agent exposes through its own invocations (black-box levers for the tests)."""

    ping: str | None = None
    last_task: int | None = None
    closed_streams: int = 0
    job: asyncio.Task[None] | None = None
    job_release: threading.Event = dataclasses.field(default_factory=threading.Event)


def _kind(payload: Any) -> str:
    return str(payload.get("kind", "echo")) if isinstance(payload, dict) else "echo"


def _count(payload: Any) -> int:
    return int(payload.get("count", 3)) if isinstance(payload, dict) else 3


def value_results() -> dict[str, Callable[[], Any]]:
    """Return values whose JSON encoding is compared (including the documented ``bytes`` difference)."""
    return {
        "str": lambda: "hello",
        "none": lambda: None,
        "int": lambda: 42,
        "float": lambda: 1.5,
        "bool": lambda: True,
        "list": lambda: [1, "two", None],
        "tuple": lambda: (1, 2),
        "set": lambda: {3},
        "unicode": lambda: {"u": "é漢字🚀", "rtl": "שלום"},
        "pydantic": lambda: Reply(text="hi", score=0.5),
        "dataclass": lambda: Point(1, 2),
        "nested": lambda: {"points": [Point(1, 2)], "reply": Reply(text="é", score=1.0)},
        "opaque": lambda: Opaque(),
        "nan": lambda: float("nan"),
        "bytes": lambda: b"abc",
        "nested_bytes": lambda: {"blob": b"\x00\xff"},
        "pydantic_datetime": lambda: Stamped(when=datetime.datetime(2024, 1, 2, 3, 4, 5)),
        "surrogate": lambda: {"s": "\ud800"},
    }


async def _async_ping_status() -> str:
    return "HealthyBusy"


def _raise_value_error() -> None:
    raise ValueError("boom é")


def _raise_surrogate() -> None:
    raise ValueError("bad \ud800 text")


def _raise_http(status: int, detail: str | None) -> None:
    raise HTTPException(status_code=status, detail=detail)


def _headers_view(context: Any, agent_context: Any) -> dict[str, Any]:
    return {
        "session_id": context.session_id,
        "request_headers": context.request_headers,
        "has_request": context.request is not None,
        "ctx_session_id": agent_context.get_session_id(),
        "ctx_request_id": agent_context.get_request_id(),
        "workload_access_token": agent_context.get_workload_access_token(),
        "oauth2_callback_url": agent_context.get_oauth2_callback_url(),
        "ctx_request_headers": agent_context.get_request_headers(),
        "experiment_arn": agent_context.get_routing_experiment_arn(),
        "experiment_variant": agent_context.get_routing_experiment_variant(),
    }


def _context_vars(agent_context: Any) -> dict[str, Any]:
    return {
        "request_id": agent_context.get_request_id(),
        "session_id": agent_context.get_session_id(),
        "workload_access_token": agent_context.get_workload_access_token(),
        "headers": agent_context.get_request_headers(),
    }


def _numbers(count: int, fail_at: int | None, state: AgentState) -> Iterator[Any]:
    try:
        for index in range(count):
            if index == fail_at:
                raise RuntimeError(f"stream broke at {index}")
            yield {"i": index}
    finally:
        state.closed_streams += 1


def _forever(state: AgentState) -> Iterator[Any]:
    try:
        index = 0
        while True:
            yield {"tick": index, "pad": "x" * 1024}
            index += 1
    finally:
        state.closed_streams += 1


async def _anumbers(count: int, fail_at: int | None, state: AgentState) -> AsyncIterator[Any]:
    try:
        for index in range(count):
            await asyncio.sleep(0)
            if index == fail_at:
                raise RuntimeError(f"async stream broke at {index}")
            yield {"i": index}
    finally:
        state.closed_streams += 1


async def _aforever(state: AgentState) -> AsyncIterator[Any]:
    try:
        index = 0
        while True:
            await asyncio.sleep(0)
            yield {"tick": index, "pad": "x" * 1024}
            index += 1
    finally:
        state.closed_streams += 1


async def _astuck(state: AgentState) -> AsyncIterator[Any]:
    """One item, then an await that only a cancellation ends (a model call that hangs)."""
    try:
        yield {"tick": 0}
        await asyncio.sleep(WAIT_LIMIT)
        yield {"tick": 1}
    finally:
        state.closed_streams += 1


def _stream_items() -> list[Any]:
    return ["hi", "data: already-sse\n\n", {"u": "漢字"}, None, [1, 2], Point(3, 4), b"raw"]


def build_agent(app_class: type, flavour: str) -> Any:
    """One agent of the given flavour (see FLAVOURS), served by ``app_class``."""
    from_module = app_class.__module__.split(".")[0]
    if from_module == "hangar":
        from hangar.sdk import BedrockAgentCoreContext, PingStatus
    else:
        from bedrock_agentcore.runtime import BedrockAgentCoreContext, PingStatus

    app = app_class(debug=flavour == "debug")
    state = AgentState()

    @app.ping
    def custom_ping() -> Any:
        if state.ping == "raise":
            raise RuntimeError("ping function broke")
        if state.ping == "enum":
            return PingStatus.HEALTHY_BUSY
        if state.ping == "coroutine":
            return _async_ping_status()
        return state.ping

    @app.async_task
    async def background_job() -> None:
        await asyncio.to_thread(state.job_release.wait, WAIT_LIMIT)

    def common(payload: Any, context: Any) -> Any:
        kind = _kind(payload)
        values = value_results()
        if kind in values:
            return values[kind]()
        actions: dict[str, Callable[[], Any]] = {
            "echo": lambda: {"payload": payload},
            "headers": lambda: _headers_view(context, BedrockAgentCoreContext),
            "raise": _raise_value_error,
            "raise_surrogate": _raise_surrogate,
            "http_exception": lambda: _raise_http(418, "short and stout"),
            "http_exception_no_detail": lambda: _raise_http(404, None),
            "response": lambda: JSONResponse({"custom": True}, status_code=201, headers={"x-agent": "yes"}),
            "text_response": lambda: PlainTextResponse("plain", status_code=202),
            "set_ping": lambda: _set(state, "ping", payload.get("value")),
            "ping_status": lambda: app.get_current_ping_status().value,
            "add_task": lambda: _set(state, "last_task", app.add_async_task("corpus-task", {"m": 1})) is None,
            "complete_task": lambda: app.complete_async_task(state.last_task),
            "complete_unknown": lambda: app.complete_async_task(12345),
            "task_info": app.get_async_task_info,
            "force_busy": lambda: app.force_ping_status(PingStatus.HEALTHY_BUSY),
            "clear_forced": app.clear_forced_ping_status,
            "closed_streams": lambda: state.closed_streams,
            "config_bundle_ref": BedrockAgentCoreContext.get_config_bundle_ref,
            "config_bundle": BedrockAgentCoreContext.get_config_bundle,
        }
        if kind not in actions:
            return {"unknown_kind": kind}
        return actions[kind]()

    def stream_for(payload: Any) -> Iterator[Any] | AsyncIterator[Any] | None:
        kind = _kind(payload)
        fail_at = payload.get("fail_at") if isinstance(payload, dict) else None
        if kind == "stream":
            return _numbers(_count(payload), fail_at, state)
        if kind == "astream":
            return _anumbers(_count(payload), fail_at, state)
        if kind == "stream_forever":
            return _forever(state)
        if kind == "astream_forever":
            return _aforever(state)
        if kind == "astream_stuck":
            return _astuck(state)
        if kind == "stream_items":
            return iter(_stream_items())
        return None

    if flavour in ("sync", "debug"):

        @app.entrypoint
        def invoke(payload: Any, context: Any) -> Any:
            stream = stream_for(payload)
            return stream if stream is not None else common(payload, context)

    elif flavour == "async":

        @app.entrypoint
        async def invoke_async(payload: Any, context: Any) -> Any:
            kind = _kind(payload)
            if kind == "spawn_job":
                state.job_release.clear()
                state.job = asyncio.get_running_loop().create_task(background_job())
                await asyncio.sleep(0)
                return app.get_async_task_info()["active_count"]
            if kind == "finish_job":
                state.job_release.set()
                if state.job is not None:
                    await asyncio.wait_for(state.job, WAIT_LIMIT)
                return app.get_async_task_info()["active_count"]
            stream = stream_for(payload)
            return stream if stream is not None else common(payload, context)

    elif flavour == "syncgen":

        @app.entrypoint
        def invoke_gen(payload: Any) -> Iterator[Any]:
            kind = _kind(payload)
            if kind == "fail_first":
                raise RuntimeError("failed before the first item")
            if kind == "items":
                yield from _stream_items()
                return
            if kind == "context_vars":
                yield _context_vars(BedrockAgentCoreContext)
                yield _context_vars(BedrockAgentCoreContext)  # still there on the next step
                return
            yield from _numbers(_count(payload), payload.get("fail_at") if isinstance(payload, dict) else None, state)

    elif flavour == "asyncgen":

        @app.entrypoint
        async def invoke_agen(payload: Any, context: Any) -> AsyncIterator[Any]:
            kind = _kind(payload)
            if kind == "fail_first":
                raise RuntimeError("failed before the first item")
            if kind == "items":
                for item in _stream_items():
                    yield item
                return
            if kind == "session":
                yield {"session_id": context.session_id}
                return
            if kind == "context_vars":
                yield _context_vars(BedrockAgentCoreContext)
                await asyncio.sleep(0)
                yield _context_vars(BedrockAgentCoreContext)
                return
            async for item in _anumbers(_count(payload), None, state):
                yield item

    elif flavour == "ctxname":

        @app.entrypoint
        def invoke_ctx(payload: Any, ctx: Any) -> Any:
            return {"ctx": ctx is not None}

    if flavour != "bare":

        @app.websocket
        async def ws_echo(websocket: WebSocket, context: Any) -> None:
            await _websocket_echo(websocket, context)

    return app


def _set(state: AgentState, name: str, value: Any) -> Any:
    setattr(state, name, value)
    return value


async def _websocket_echo(websocket: WebSocket, context: Any) -> None:
    """Echo; ``raise`` fails the handler, ``close:<code>`` closes, ``session`` answers with the session id."""
    await websocket.accept()
    try:
        while True:
            message = await websocket.receive()
            if message["type"] == "websocket.disconnect":
                return
            text = message.get("text")
            if text is None:
                await websocket.send_bytes(message.get("bytes") or b"")
            elif text == "raise":
                raise RuntimeError("websocket handler broke")
            elif text.startswith("close:"):
                await websocket.close(code=int(text.split(":", 1)[1]))
                return
            elif text == "session":
                await websocket.send_json({"session_id": context.session_id, "headers": context.request_headers})
            else:
                await websocket.send_text(text)
    except WebSocketDisconnect:
        return
