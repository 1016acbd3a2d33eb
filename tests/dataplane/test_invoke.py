"""InvokeAgentRuntime end to end: boto3 against a real server, agents deployed through the control plane."""

from __future__ import annotations

import json
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
from botocore.exceptions import ClientError

from tests.dataplane.support import deploy, new_session_id, session_state, sessions, wait_for
from tests.support.server import HangarServer


@pytest.fixture(scope="module")
def echo(control: Any) -> dict[str, Any]:
    return deploy(control, "echo")


@pytest.fixture(scope="module")
def testbed(control: Any) -> dict[str, Any]:
    return deploy(control, "testbed")


def _invoke(data: Any, runtime: dict[str, Any], payload: object, session_id: str, **extra: Any) -> dict[str, Any]:
    response = data.invoke_agent_runtime(
        agentRuntimeArn=runtime["agentRuntimeArn"], runtimeSessionId=session_id, payload=json.dumps(payload), **extra
    )
    response["body"] = response["response"].read()
    return response


def test_invoke_echo_returns_the_agents_json_and_echoes_the_session(data: Any, echo: dict[str, Any]) -> None:
    session_id = new_session_id()
    response = _invoke(data, echo, {"prompt": "hi"}, session_id, traceId="Root=1-abc")
    assert response["statusCode"] == 200
    assert response["contentType"] == "application/json"
    assert response["runtimeSessionId"] == session_id
    assert response["traceId"] == "Root=1-abc"
    assert json.loads(response["body"]) == {"echo": {"prompt": "hi"}, "session_id": session_id}


def test_a_session_keeps_state_and_a_new_session_gets_a_fresh_sandbox(
    data: Any, testbed: dict[str, Any], server: HangarServer
) -> None:
    first, second = new_session_id(), new_session_id()
    counts = [json.loads(_invoke(data, testbed, {"action": "count"}, first)["body"])["count"] for _ in range(3)]
    assert counts == [1, 2, 3]
    _invoke(data, testbed, {"action": "write", "name": "f.txt", "text": "mine"}, first)
    assert json.loads(_invoke(data, testbed, {"action": "read", "name": "f.txt"}, first)["body"])["text"] == "mine"
    other = json.loads(_invoke(data, testbed, {"action": "count"}, second)["body"])
    assert other["count"] == 1
    assert json.loads(_invoke(data, testbed, {"action": "read", "name": "f.txt"}, second)["body"])["text"] is None
    assert session_state(server, testbed["agentRuntimeId"], first) == "Idle"


def test_stop_session_then_the_same_id_starts_fresh(data: Any, testbed: dict[str, Any], server: HangarServer) -> None:
    session_id = new_session_id()
    _invoke(data, testbed, {"action": "count"}, session_id)
    _invoke(data, testbed, {"action": "count"}, session_id)
    stopped = data.stop_runtime_session(agentRuntimeArn=testbed["agentRuntimeArn"], runtimeSessionId=session_id)
    assert stopped["statusCode"] == 200 and stopped["runtimeSessionId"] == session_id
    assert session_state(server, testbed["agentRuntimeId"], session_id) == "Terminated"
    assert json.loads(_invoke(data, testbed, {"action": "count"}, session_id)["body"])["count"] == 1
    with pytest.raises(ClientError) as raised:
        data.stop_runtime_session(agentRuntimeArn=testbed["agentRuntimeArn"], runtimeSessionId=new_session_id())
    assert raised.value.response["Error"]["Code"] == "ResourceNotFoundException"
    assert raised.value.response["ResponseMetadata"]["HTTPStatusCode"] == 404


def test_streaming_sse_arrives_line_by_line(data: Any, control: Any) -> None:
    streaming = deploy(control, "streaming")
    response = data.invoke_agent_runtime(
        agentRuntimeArn=streaming["agentRuntimeArn"],
        runtimeSessionId=new_session_id(),
        payload=json.dumps({"prompt": "p", "count": 3, "mode": "async"}),
    )
    assert response["contentType"].startswith("text/event-stream")
    lines = [line for line in response["response"].iter_lines() if line]
    events = [json.loads(line.removeprefix(b"data: ")) for line in lines]
    assert events[:3] == [{"index": i, "partial": f"p #{i}"} for i in range(3)]
    assert events[-1] == {"complete": True, "mode": "async"}


def test_agent_error_status_is_a_runtime_client_error(data: Any, testbed: dict[str, Any]) -> None:
    with pytest.raises(ClientError) as raised:
        _invoke(data, testbed, {"action": "no-such-action"}, new_session_id())
    error = raised.value.response
    assert error["Error"]["Code"] == "RuntimeClientError"
    assert error["ResponseMetadata"]["HTTPStatusCode"] == 424
    assert "500" in error["Error"]["Message"] and "no-such-action" in error["Error"]["Message"]


def test_agent_killed_mid_stream_breaks_the_clients_stream_and_ends_the_session(
    data: Any, testbed: dict[str, Any], server: HangarServer
) -> None:
    session_id = new_session_id()
    response = data.invoke_agent_runtime(
        agentRuntimeArn=testbed["agentRuntimeArn"],
        runtimeSessionId=session_id,
        payload=json.dumps({"action": "stream_then_die", "chunks": 2}),
    )
    assert response["statusCode"] == 200
    received = b""
    with pytest.raises(Exception) as raised:
        for chunk in response["response"].iter_chunks(chunk_size=16):
            received += chunk
    assert "IncompleteRead" in repr(raised.value) or "ProtocolError" in repr(raised.value)
    assert b'data: {"index": 0}' in received
    wait_for(lambda: session_state(server, testbed["agentRuntimeId"], session_id) == "Terminated", timeout=30)


def test_concurrent_first_calls_share_one_sandbox(data: Any, testbed: dict[str, Any], server: HangarServer) -> None:
    session_id = new_session_id()
    with ThreadPoolExecutor(max_workers=6) as pool:
        answers = list(pool.map(lambda _: _invoke(data, testbed, {"action": "count"}, session_id), range(6)))
    counts = sorted(json.loads(a["body"])["count"] for a in answers)
    assert counts == [1, 2, 3, 4, 5, 6]  # one agent process counted every call
    records = [s for s in sessions(server) if s["runtimeSessionId"] == session_id]
    assert [r["state"] for r in records] == ["Idle"]
