"""The protocol examples start by fork from their version's warm template, like any Python agent: the MCP server
runs ``server.run(transport="streamable-http")`` as AgentCore documents it (its template stops where that enters
its event loop; see test_async_fork.py), the A2A and AG-UI servers hand their apps to ``uvicorn.run``."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import httpx
import pytest

from tests.dataplane.support import deploy, new_session_id, sessions, wait_for
from tests.support.server import HangarServer

RUN = {
    "threadId": "t",
    "runId": "r",
    "messages": [{"id": "m", "role": "user", "content": "hi"}],
    "state": {},
    "tools": [],
    "context": [],
    "forwardedProps": {},
}


def _mcp(data: Any, arn: str, session_id: str) -> None:
    body = {"jsonrpc": "2.0", "id": 1, "method": "tools/list", "params": {}}
    answer = data.invoke_agent_runtime(
        agentRuntimeArn=arn,
        runtimeSessionId=session_id,
        payload=json.dumps(body),
        contentType="application/json",
        accept="application/json, text/event-stream",
    )
    assert b"remember" in answer["response"].read()


def _a2a(data: Any, arn: str, session_id: str) -> None:
    assert data.get_agent_card(agentRuntimeArn=arn, runtimeSessionId=session_id)["agentCard"]["name"] == "shouter"


def _agui(data: Any, arn: str, session_id: str) -> None:
    answer = data.invoke_agent_runtime(agentRuntimeArn=arn, runtimeSessionId=session_id, payload=json.dumps(RUN))
    assert b"RUN_FINISHED" in answer["response"].read()


CASES: dict[str, tuple[str, str, Callable[[Any, str, str], None]]] = {
    "mcp": ("mcp_server", "MCP", _mcp),
    "a2a": ("a2a_agent", "A2A", _a2a),
    "agui": ("agui_agent", "AGUI", _agui),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_example_sessions_start_by_fork(server: HangarServer, control: Any, data: Any, case: str) -> None:
    if not httpx.get(f"{server.url}/healthz", timeout=30).json()["sandbox"]["isolates"]:
        pytest.skip("the process backend cannot fork templates")
    agent, protocol, call = CASES[case]
    runtime = deploy(control, agent, protocolConfiguration={"serverProtocol": protocol})
    seen: list[dict[str, Any]] = []

    def forked() -> str | None:
        session_id = new_session_id()
        call(data, runtime["agentRuntimeArn"], session_id)
        (record,) = [s for s in sessions(server) if s["runtimeSessionId"] == session_id]
        seen.append(record)
        data.stop_runtime_session(agentRuntimeArn=runtime["agentRuntimeArn"], runtimeSessionId=session_id)
        return session_id if record["startKind"] == "fork" else None

    try:
        wait_for(forked, timeout=120, interval=0.5)  # the template starts beside the first sessions
    except AssertionError:
        pytest.fail(f"no session of {agent} started by fork: {[(r['startKind'], r.get('coldReason')) for r in seen]}")
