"""The Python surface of the app: ``@app.handler()`` as the runtime overview writes it, the decorators and task
API shared with the reference SDK, Starlette middleware and lifespan, and the bind-address rule."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import io
import json
import logging
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from bedrock_agentcore.runtime import BedrockAgentCoreApp as ReferenceApp
from starlette.middleware import Middleware
from starlette.types import ASGIApp, Receive, Scope, Send

from hangar.sdk import AgentApp, BedrockAgentCoreApp, PingStatus, RequestContext, RequestContextFormatter
from hangar.sdk._server import default_host
from tests.sdk.agents import build_agent
from tests.sdk.servers import ThreadServer

TIMEOUT = 30.0
BOTH = pytest.mark.parametrize("app_class", [AgentApp, ReferenceApp], ids=["hangar", "reference"])


@contextlib.contextmanager
def serving(app: Any) -> Iterator[ThreadServer]:
    server = ThreadServer(app).start()
    try:
        yield server
    finally:
        server.stop()


def invoke(server: ThreadServer, payload: Any) -> httpx.Response:
    return httpx.post(f"{server.url}/invocations", json=payload, timeout=TIMEOUT)


def ping(server: ThreadServer) -> str:
    return str(httpx.get(f"{server.url}/ping", timeout=TIMEOUT).json()["status"])


def test_handler_decorator_as_in_the_runtime_overview() -> None:
    app = BedrockAgentCoreApp()

    @app.handler()
    async def handle_request(request: Any, context: Any) -> dict[str, str]:
        user_input = request.get("input", "")
        return {"response": f"Processed: {user_input}"}

    with serving(app) as server:
        assert invoke(server, {"input": "Hello, agent!"}).json() == {"response": "Processed: Hello, agent!"}


def test_handler_decorator_long_running_task_through_the_context() -> None:
    app = AgentApp()
    held: dict[str, int] = {}

    @app.handler()
    async def handle_request(request: Any, context: Any) -> dict[str, Any]:
        if request.get("step") == "start":
            task_id = context.add_async_task("background-processing")
            held["task"] = task_id
            return {"status": "Task started", "task_id": task_id}
        return {"completed": context.complete_async_task(held["task"])}

    with serving(app) as server:
        assert ping(server) == "Healthy"
        started = invoke(server, {"step": "start"}).json()
        assert started["status"] == "Task started"
        assert isinstance(started["task_id"], int)
        assert ping(server) == "HealthyBusy"
        assert invoke(server, {"step": "finish"}).json() == {"completed": True}
        assert ping(server) == "Healthy"
        assert invoke(server, {"step": "finish"}).json() == {"completed": False}


def test_handler_decorator_streaming_as_in_the_runtime_overview() -> None:
    app = AgentApp()

    async def generate_response(request: Any) -> AsyncIterator[str]:
        for word in request["input"].split():
            await asyncio.sleep(0)
            yield word

    @app.handler()
    async def handle_request(request: Any, context: Any) -> AsyncIterator[dict[str, Any]]:
        async for chunk in generate_response(request):
            yield {"partial": chunk}
        yield {"complete": True}

    with serving(app) as server:
        response = invoke(server, {"input": "un deux"})
    assert response.headers["content-type"] == "text/event-stream; charset=utf-8"
    assert response.text == 'data: {"partial": "un"}\n\ndata: {"partial": "deux"}\n\ndata: {"complete": true}\n\n'


def test_handler_decorator_passes_the_context_whatever_its_name() -> None:
    app = AgentApp()

    @app.handler()
    def two(req: Any, ctx: Any) -> dict[str, Any]:
        return {"context": type(ctx).__name__, "session": ctx.session_id}

    one_app = AgentApp()

    @one_app.handler()
    def one(req: Any) -> Any:
        return req

    with serving(app) as server:
        answer = httpx.post(
            f"{server.url}/invocations",
            json={},
            headers={"X-Amzn-Bedrock-AgentCore-Runtime-Session-Id": "s-1"},
            timeout=TIMEOUT,
        ).json()
    assert answer == {"context": "RequestContext", "session": "s-1"}
    with serving(one_app) as server:
        assert invoke(server, [1]).json() == [1]


@BOTH
def test_async_task_decorator_accepts_async_functions_only(app_class: type) -> None:
    app = app_class()

    def blocking() -> None:
        return None

    with pytest.raises(ValueError, match="async functions"):
        app.async_task(blocking)

    async def nonblocking() -> int:
        return 7

    wrapped = app.async_task(nonblocking)
    assert wrapped.__name__ == "nonblocking"
    assert asyncio.run(wrapped()) == 7
    assert app.get_async_task_info() == {"active_count": 0, "running_jobs": []}


@BOTH
def test_task_and_ping_api(app_class: type) -> None:
    app = app_class()
    assert app.get_current_ping_status() == PingStatus.HEALTHY
    assert app.get_current_ping_status() == "Healthy"
    task_id = app.add_async_task("job", {"file": "a.csv"})
    assert isinstance(task_id, int)
    info = app.get_async_task_info()
    assert info["active_count"] == 1
    assert info["running_jobs"][0]["name"] == "job"
    assert app.get_current_ping_status() == "HealthyBusy"
    app.force_ping_status(PingStatus.HEALTHY)
    assert app.get_current_ping_status() == "Healthy"
    app.clear_forced_ping_status()
    assert app.complete_async_task(task_id) is True
    assert app.complete_async_task(task_id) is False
    assert app.get_current_ping_status() == "Healthy"


@BOTH
def test_entrypoint_registers_and_attaches_run(app_class: type) -> None:
    app = app_class()

    def invoke_fn(payload: Any) -> Any:
        return payload

    assert app.entrypoint(invoke_fn) is invoke_fn
    assert app.handlers["main"] is invoke_fn
    assert callable(invoke_fn.run)  # type: ignore[attr-defined]
    assert app.debug is False
    assert app_class(debug=True).debug is True


class TagMiddleware:
    """Pure ASGI middleware putting a value into ``request.state``, as agents do for auth or tracing."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] in ("http", "websocket"):
            scope.setdefault("state", {})["tag"] = "from-middleware"
        await self.app(scope, receive, send)


@BOTH
def test_middleware_state_and_lifespan_reach_the_handler(app_class: type) -> None:
    events: list[str] = []

    @contextlib.asynccontextmanager
    async def lifespan(app: Any) -> AsyncIterator[None]:
        events.append("startup")
        yield
        events.append("shutdown")

    app = app_class(lifespan=lifespan, middleware=[Middleware(TagMiddleware)])

    @app.entrypoint
    def invoke_fn(payload: Any, context: Any) -> dict[str, Any]:
        return {"tag": context.request.state.tag, "events": list(events)}

    with serving(app) as server:
        assert invoke(server, {}).json() == {"tag": "from-middleware", "events": ["startup"]}
    assert events == ["startup", "shutdown"]


def test_request_context_outside_an_app() -> None:
    context = RequestContext(session_id="s", request_headers={"x-a": "1"})
    assert (context.session_id, context.request_headers, context.request) == ("s", {"x-a": "1"}, None)
    with pytest.raises(RuntimeError, match="not bound to an app"):
        context.add_async_task("orphan")


@pytest.mark.parametrize(
    ("environ", "dockerenv", "expected"),
    [
        ({}, False, "127.0.0.1"),
        ({}, True, "0.0.0.0"),
        ({"DOCKER_CONTAINER": "1"}, False, "0.0.0.0"),
        ({"DOCKER_CONTAINER": ""}, False, "127.0.0.1"),
        ({"HANGAR_SANDBOX": "1"}, False, "0.0.0.0"),
        ({"HANGAR_SANDBOX": "0"}, False, "127.0.0.1"),
    ],
)
def test_bind_address(tmp_path: Path, environ: dict[str, str], dockerenv: bool, expected: str) -> None:
    marker = tmp_path / ".dockerenv"
    if dockerenv:
        marker.touch()
    assert default_host(environ, marker) == expected


@BOTH
def test_time_of_last_update_moves_only_when_the_status_changes(app_class: type) -> None:
    app = app_class()
    app.entrypoint(lambda payload: payload)
    with serving(app) as server:

        def body() -> dict[str, Any]:
            answer: dict[str, Any] = httpx.get(f"{server.url}/ping", timeout=TIMEOUT).json()
            return answer

        first, second = body(), body()
        assert first == second
        assert first["status"] == "Healthy"
        assert isinstance(first["time_of_last_update"], int)
        task_id = app.add_async_task("work")
        busy = body()
        assert busy["status"] == "HealthyBusy"
        assert busy["time_of_last_update"] >= first["time_of_last_update"]
        assert body() == busy
        app.complete_async_task(task_id)
        assert body()["status"] == "Healthy"


def test_a_named_config_bundle_is_refused_clearly() -> None:
    baggage = "aws.agentcore.configbundle_arn=arn%3Abundle%2Fb-9,aws.agentcore.configbundle_version=1"
    with serving(build_agent(AgentApp, "sync")) as server:
        response = httpx.post(
            f"{server.url}/invocations", json={"kind": "config_bundle"}, headers={"baggage": baggage}, timeout=TIMEOUT
        )
    assert response.status_code == 500
    assert response.json() == {"error": "configuration bundle 'b-9': Hangar serves no configuration bundles"}


class AsyncCallable:
    """An agent object whose ``__call__`` is a coroutine function (frameworks hand these out)."""

    async def __call__(self, payload: Any, context: Any) -> dict[str, Any]:
        await asyncio.sleep(0)
        return {"object": payload, "session": context.session_id}


async def prefixed(prefix: str, payload: Any) -> dict[str, Any]:
    await asyncio.sleep(0)
    return {"partial": f"{prefix}{payload}"}


@BOTH
@pytest.mark.parametrize("shape", ["async-callable-object", "partial-of-async-function"])
def test_wrapped_async_handlers_run_on_the_worker_loop(app_class: type, shape: str) -> None:
    app = app_class()
    if shape == "async-callable-object":
        app.entrypoint(AsyncCallable())
        expected: dict[str, Any] = {"object": "x", "session": "s-2"}
    else:
        app.entrypoint(functools.partial(prefixed, ">"))
        expected = {"partial": ">x"}
    with serving(app) as server:
        response = httpx.post(
            f"{server.url}/invocations",
            json="x",
            headers={"X-Amzn-Bedrock-AgentCore-Runtime-Session-Id": "s-2"},
            timeout=TIMEOUT,
        )
    assert response.json() == expected


def test_log_lines_are_json_with_the_request_and_session_ids() -> None:
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(RequestContextFormatter())
    app = AgentApp()
    app.logger.addHandler(handler)

    @app.entrypoint
    async def invoke_fn(payload: Any) -> None:
        app.logger.info("handling %s", payload["n"])

    try:
        with serving(app) as server:
            httpx.post(
                f"{server.url}/invocations",
                json={"n": "é1"},
                headers={
                    "X-Amzn-Bedrock-AgentCore-Runtime-Session-Id": "s-log",
                    "X-Amzn-Bedrock-AgentCore-Runtime-Request-Id": "r-log",
                },
                timeout=TIMEOUT,
            )
    finally:
        app.logger.removeHandler(handler)
    lines = [json.loads(line) for line in stream.getvalue().splitlines()]
    [line] = [line for line in lines if line["message"] == "handling é1"]
    assert line["requestId"] == "r-log"
    assert line["sessionId"] == "s-log"
    assert line["level"] == "INFO"
    assert line["logger"] == "hangar.sdk.app"
    assert line["timestamp"].endswith("Z")
