"""The SDK warms up in the ASGI startup: the threads a first request needs exist before ``/ping`` answers.

Each agent runs in a fresh interpreter, so no thread of another test can stand in for the one under test. Its
``@app.ping`` function notes which threads exist when the first ``/ping`` comes (before any invocation); the
entrypoint then says which thread it runs on. No timing is measured.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import textwrap
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from hangar.sdk import AgentApp
from tests.sdk.servers import ThreadServer, wait_for_ping
from tests.support.server import free_port

TIMEOUT = 30.0

AGENT = """
import os, threading
from hangar.sdk import AgentApp

app = AgentApp()
seen_at_first_ping = []

@app.ping
def ping():
    if not seen_at_first_ping:
        seen_at_first_ping.append({{t.name: t.ident for t in threading.enumerate()}})
    return None

@app.entrypoint
{definition} invoke(payload):
    me = threading.current_thread()
    return {{"name": me.name, "ident": me.ident, "at_first_ping": seen_at_first_ping[0]}}

app.run(port=int(os.environ["PORT"]), host="127.0.0.1")
"""


@contextlib.contextmanager
def agent_process(tmp_path: Path, definition: str) -> Iterator[str]:
    script = tmp_path / "main.py"
    script.write_text(textwrap.dedent(AGENT.format(definition=definition)))
    port = free_port()
    with (tmp_path / "agent.log").open("wb") as log:
        process = subprocess.Popen(
            [sys.executable, str(script)], env={**os.environ, "PORT": str(port)}, stdout=log, stderr=log
        )
        url = f"http://127.0.0.1:{port}"
        try:
            wait_for_ping(url, alive=lambda: process.poll() is None)
            yield url
        finally:
            process.terminate()
            process.wait(timeout=10)


@pytest.mark.parametrize(
    ("definition", "thread_name"),
    [("def", "AnyIO worker thread"), ("async def", "hangar-worker-loop")],
    ids=["sync", "async"],
)
def test_first_invocation_runs_on_a_thread_started_before_serving(
    tmp_path: Path, definition: str, thread_name: str
) -> None:
    with agent_process(tmp_path, definition) as url:
        answer = httpx.post(f"{url}/invocations", json={}, timeout=TIMEOUT).json()
    assert answer["name"] == thread_name
    assert answer["at_first_ping"].get(thread_name) == answer["ident"]  # the same thread, already there


def test_an_async_agent_also_warms_the_thread_pool_that_encodes_its_results(tmp_path: Path) -> None:
    with agent_process(tmp_path, "async def") as url:
        answer = httpx.post(f"{url}/invocations", json={}, timeout=TIMEOUT).json()
    assert "AnyIO worker thread" in answer["at_first_ping"]


def test_importing_the_sdk_and_building_an_app_starts_no_thread_but_imports_the_thread_pool_backend() -> None:
    """Safe to fork until it serves (no thread), with the costly import already done (a template pays it once)."""
    code = textwrap.dedent(
        """
        import sys, threading
        from hangar.sdk import AgentApp
        app = AgentApp()

        @app.entrypoint
        async def invoke(payload):
            return payload

        print(threading.active_count(), "anyio._backends._asyncio" in sys.modules)
        """
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=TIMEOUT, check=True)
    assert result.stdout.split() == ["1", "True"]


def test_user_lifespan_and_its_state_still_reach_the_handler() -> None:
    events: list[str] = []

    @contextlib.asynccontextmanager
    async def lifespan(app: Any) -> AsyncIterator[dict[str, str]]:
        events.append("startup")
        yield {"model": "loaded"}
        events.append("shutdown")

    app = AgentApp(lifespan=lifespan)

    @app.entrypoint
    def invoke(payload: Any, context: Any) -> dict[str, Any]:
        return {"model": context.request.state.model, "events": list(events)}

    server = ThreadServer(app).start()
    try:
        answer = httpx.post(f"{server.url}/invocations", json={}, timeout=TIMEOUT).json()
    finally:
        server.stop()
    assert answer == {"model": "loaded", "events": ["startup"]}
    assert events == ["startup", "shutdown"]


def test_a_failed_warm_up_is_logged_and_the_agent_serves_anyway(monkeypatch: pytest.MonkeyPatch) -> None:
    async def broken(*args: Any) -> None:
        raise RuntimeError("no threads today")

    monkeypatch.setattr("hangar.sdk._app.warm_up", broken)
    app = AgentApp()

    @app.entrypoint
    def invoke(payload: Any) -> Any:
        return payload

    server = ThreadServer(app).start()
    try:
        assert httpx.post(f"{server.url}/invocations", json={"a": 1}, timeout=TIMEOUT).json() == {"a": 1}
    finally:
        server.stop()
