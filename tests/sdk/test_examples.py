"""The examples, run exactly as a sandbox runs them: ``python examples/<name>/main.py`` listening on ``$PORT``."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import websockets
from websockets.sync.client import connect

from tests.sdk.servers import REPO, ExampleProcess

EXAMPLES = ("echo", "streaming", "async_task", "websocket_echo")
TIMEOUT = 30.0
SESSION = "example-session-0123456789-0123456789"


@pytest.fixture
def example(request: pytest.FixtureRequest) -> Iterator[ExampleProcess]:
    process = ExampleProcess(request.param).start()
    try:
        yield process
    finally:
        process.stop()


def invoke(example: ExampleProcess, payload: object, **headers: str) -> httpx.Response:
    return httpx.post(f"{example.url}/invocations", json=payload, headers=headers, timeout=TIMEOUT)


def sse_events(body: str) -> list[object]:
    frames = body.split("\n\n")
    assert frames[-1] == ""
    assert all(frame.startswith("data: ") for frame in frames[:-1])
    return [json.loads(frame.removeprefix("data: ")) for frame in frames[:-1]]


@pytest.mark.parametrize("name", EXAMPLES)
def test_example_is_a_deployable_artifact(name: str) -> None:
    folder = REPO / "examples" / name
    source = (folder / "main.py").read_text(encoding="utf-8")
    assert "from hangar.sdk import" in source
    requirements = [line for line in (folder / "requirements.txt").read_text().splitlines() if line.strip()]
    assert all(line.lstrip().startswith("#") for line in requirements), "hangar.sdk is provided by the sandbox"
    assert {path.name for path in Path(folder).iterdir() if not path.name.startswith((".", "__"))} == {
        "main.py",
        "requirements.txt",
    }


@pytest.mark.parametrize("example", ["echo"], indirect=True)
def test_echo(example: ExampleProcess) -> None:
    response = invoke(example, {"prompt": "héllo 🚀"}, **{"X-Amzn-Bedrock-AgentCore-Runtime-Session-Id": SESSION})
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/json"
    assert response.json() == {"echo": {"prompt": "héllo 🚀"}, "session_id": SESSION}
    assert invoke(example, [1, 2]).json() == {"echo": [1, 2], "session_id": None}
    ping = httpx.get(f"{example.url}/ping", timeout=TIMEOUT).json()
    assert ping["status"] == "Healthy"
    assert isinstance(ping["time_of_last_update"], int)


@pytest.mark.parametrize("example", ["streaming"], indirect=True)
@pytest.mark.parametrize("mode", ["sync", "async"])
def test_streaming(example: ExampleProcess, mode: str) -> None:
    response = invoke(example, {"prompt": "p", "count": 3, "mode": mode})
    assert response.status_code == 200
    assert response.headers["content-type"] == "text/event-stream; charset=utf-8"
    assert sse_events(response.text) == [
        {"index": 0, "partial": "p #0"},
        {"index": 1, "partial": "p #1"},
        {"index": 2, "partial": "p #2"},
        {"complete": True, "mode": mode},
    ]


@pytest.mark.parametrize("example", ["async_task"], indirect=True)
def test_async_task_reports_busy_until_its_job_ends(example: ExampleProcess) -> None:
    def ping_status() -> str:
        return str(httpx.get(f"{example.url}/ping", timeout=TIMEOUT).json()["status"])

    assert ping_status() == "Healthy"
    started = invoke(example, {"action": "start", "seconds": 600}).json()
    assert started["started"] is True
    assert started["jobs"]["active_count"] == 1
    assert started["jobs"]["running_jobs"][0]["name"] == "background_job"
    assert ping_status() == "HealthyBusy"
    assert invoke(example, {"action": "status"}).json()["ping"] == "HealthyBusy"
    cancelled = invoke(example, {"action": "cancel"}).json()
    assert cancelled == {"cancelled": 1, "jobs": {"active_count": 0, "running_jobs": []}}
    assert ping_status() == "Healthy"


@pytest.mark.parametrize("example", ["websocket_echo"], indirect=True)
def test_websocket_echo(example: ExampleProcess) -> None:
    with connect(example.ws_url, open_timeout=TIMEOUT, close_timeout=TIMEOUT) as socket:
        socket.send("héllo")
        assert socket.recv(timeout=TIMEOUT) == "héllo"
        socket.send(b"\x00\xff")
        assert socket.recv(timeout=TIMEOUT) == b"\x00\xff"
        socket.send("close")
        with pytest.raises(websockets.ConnectionClosedOK):
            socket.recv(timeout=TIMEOUT)
        assert socket.close_code == 1000
    assert invoke(example, {"q": 1}).json()["echo"] == {"q": 1}
