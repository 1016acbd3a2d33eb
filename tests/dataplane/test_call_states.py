"""Active/Idle as the operator API reports it (``GET /hangar/sessions/``), driven by real clients: a call holds its
session Active until its answer is over (a streamed one until the stream ends or its client leaves), a WebSocket
until it closes, and an agent that dies mid-call ends its session. The call lease (``sessions/calls.py``) does this
bookkeeping; these tests see it from outside."""

from __future__ import annotations

import asyncio
import json
from concurrent.futures import ThreadPoolExecutor
from typing import Any
from urllib.parse import quote

import httpx
import pytest
import websockets
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials
from botocore.exceptions import ClientError
from websockets.exceptions import ConnectionClosed

from tests.dataplane.support import deploy, new_session_id, sessions, wait_for
from tests.support.server import HangarServer, read_admin_key

SESSION = "X-Amzn-Bedrock-AgentCore-Runtime-Session-Id"
FAULT = "X-Amzn-Bedrock-AgentCore-Runtime-Custom-Fault"


@pytest.fixture(scope="module")
def testbed(control: Any) -> dict[str, Any]:
    return deploy(control, "testbed")


def _entry(server: HangarServer, runtime: dict[str, Any], session_id: str) -> dict[str, Any] | None:
    """The operator API's newest record of this session (live ones come first)."""
    for entry in sessions(server):
        if entry["runtimeId"] == runtime["agentRuntimeId"] and entry["runtimeSessionId"] == session_id:
            return entry
    return None


def _state(server: HangarServer, runtime: dict[str, Any], session_id: str) -> str | None:
    entry = _entry(server, runtime, session_id)
    return None if entry is None else str(entry["state"])


def _idle_with_nothing_in_flight(server: HangarServer, runtime: dict[str, Any], session_id: str) -> dict[str, Any]:
    entry = wait_for(lambda: (e := _entry(server, runtime, session_id)) and e["state"] == "Idle" and e, timeout=60)
    assert entry["inflight"] == 0 and entry["endedAt"] is None
    return entry


def _signed(server: HangarServer, method: str, url: str, headers: dict[str, str], body: bytes = b"") -> dict[str, str]:
    key_id, secret = read_admin_key(server.credentials_file)
    request = AWSRequest(method=method, url=url, data=body, headers=headers)
    SigV4Auth(Credentials(key_id, secret), "bedrock-agentcore", "us-west-2").add_auth(request)
    return {k: v for k, v in request.headers.items() if k.lower() != "host"}


def _invoke(data: Any, runtime: dict[str, Any], session_id: str, payload: object) -> Any:
    response = data.invoke_agent_runtime(
        agentRuntimeArn=runtime["agentRuntimeArn"], runtimeSessionId=session_id, payload=json.dumps(payload)
    )
    return json.loads(response["response"].read())


def test_a_call_is_active_while_it_runs_and_idle_once_answered(
    server: HangarServer, data: Any, testbed: dict[str, Any]
) -> None:
    session_id = new_session_id()
    assert _invoke(data, testbed, session_id, {"action": "count"})["count"] == 1
    _idle_with_nothing_in_flight(server, testbed, session_id)
    with ThreadPoolExecutor(1) as pool:
        running = pool.submit(_invoke, data, testbed, session_id, {"action": "sleep", "seconds": 4})
        seen = wait_for(lambda: _state(server, testbed, session_id) == "Active" or running.done(), timeout=60)
        assert seen and not running.done(), "the sleeping call was never seen Active"
        assert running.result() == {"slept": 4}
    _idle_with_nothing_in_flight(server, testbed, session_id)


def test_a_stream_its_client_abandons_leaves_the_session_idle_and_serving(server: HangarServer, control: Any) -> None:
    runtime = deploy(control, "misbehave")  # "drip": 200 at once, then one byte a second for five seconds
    session_id = new_session_id()
    url = f"{server.url}/runtimes/{quote(runtime['agentRuntimeArn'], safe='')}/invocations"
    with httpx.Client(timeout=60) as client:
        headers = {SESSION: session_id, FAULT: "drip", "Content-Type": "application/json"}
        with client.stream("POST", url, headers=_signed(server, "POST", url, headers, b"{}"), content=b"{}") as answer:
            assert answer.status_code == 200
            body = answer.iter_raw(1)  # held: a dropped iterator would close the response at once
            assert next(body) == b"."
            assert _state(server, runtime, session_id) == "Active"  # the stream is still open
        # leaving the block closed the unfinished response: the client is gone mid-stream
        _idle_with_nothing_in_flight(server, runtime, session_id)
        headers = {SESSION: session_id, FAULT: "none", "Content-Type": "application/json"}
        again = client.post(url, headers=_signed(server, "POST", url, headers, b"{}"), content=b"{}")
        assert again.status_code == 200 and again.json() == {"ok": True}
    _idle_with_nothing_in_flight(server, runtime, session_id)


def test_an_agent_crash_mid_call_ends_its_session(server: HangarServer, data: Any, testbed: dict[str, Any]) -> None:
    session_id = new_session_id()
    _invoke(data, testbed, session_id, {"action": "count"})
    with pytest.raises(ClientError) as raised:
        _invoke(data, testbed, session_id, {"action": "exit"})
    assert raised.value.response["Error"]["Code"] == "RuntimeClientError"
    assert "the agent process exited" in raised.value.response["Error"]["Message"]
    entry = _entry(server, testbed, session_id)  # ended before the 424 was sent
    assert entry is not None and entry["state"] == "Terminated" and entry["endReason"] == "agent exited"

    streamed = new_session_id()
    with pytest.raises(Exception):  # noqa: B017 - the stream breaks: botocore raises whichever read error it meets
        _invoke(data, testbed, streamed, {"action": "stream_then_die", "chunks": 2})
    ended = wait_for(lambda: (e := _entry(server, testbed, streamed)) and e["state"] == "Terminated" and e, timeout=60)
    assert ended["endReason"] == "agent exited"


def test_a_websocket_holds_its_session_active_until_either_side_closes(server: HangarServer, control: Any) -> None:
    runtime = deploy(control, "rawecho")
    session_id = new_session_id()
    url = f"ws://127.0.0.1:{server.port}/runtimes/{quote(runtime['agentRuntimeArn'], safe='')}/ws"
    http_url = url.replace("ws://", "http://")

    async def talk(close_from_agent: bool) -> str | None:
        headers = _signed(server, "GET", http_url, {SESSION: session_id})
        async with websockets.connect(url, additional_headers=headers) as ws:
            await ws.send("one")
            assert await ws.recv() == "one"
            state = await asyncio.to_thread(_state, server, runtime, session_id)
            if close_from_agent:
                await ws.send("close:4001")
                with pytest.raises(ConnectionClosed):
                    await ws.recv()
                assert ws.close_code == 4001
        return state

    assert asyncio.run(talk(close_from_agent=False)) == "Active"  # the client closes
    _idle_with_nothing_in_flight(server, runtime, session_id)
    assert asyncio.run(talk(close_from_agent=True)) == "Active"  # the agent closes
    _idle_with_nothing_in_flight(server, runtime, session_id)
