"""A version that cannot fork from a warm template gets one cold spare started ahead by default (issue 18 part 2),
so its first caller does not wait for a cold start: a real ``hangar serve`` (namespace backend, warm pool size 0),
an agent that starts a thread at import (its template is unsafe) beside one that forks."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from botocore.exceptions import ClientError

from tests.dataplane.support import deploy, new_session_id, operator, seeded_server, sessions, wait_for
from tests.support.server import HangarServer


@pytest.fixture(scope="module")
def server() -> Iterator[HangarServer]:
    with seeded_server("hangar-cold-spares-", ("threaded", "echo", "neverserves")) as hangar:
        if not httpx.get(f"{hangar.url}/healthz", timeout=30).json()["sandbox"]["isolates"]:
            pytest.skip("the process backend has no templates: nothing is unforkable")
        yield hangar


def spares_of(server: HangarServer, runtime: dict[str, Any]) -> list[str]:
    return list(operator(server)["warmPool"]["ready"].get(f"{runtime['agentRuntimeId']}/1", []))


def test_an_unforkable_version_keeps_a_cold_spare_replaced_when_used(server: HangarServer) -> None:
    control = server.boto3_client("bedrock-agentcore-control")
    data = server.boto3_client("bedrock-agentcore")
    threaded, echo = deploy(control, "threaded"), deploy(control, "echo")
    first = wait_for(lambda: spares_of(server, threaded), timeout=180, interval=0.5)
    reason = operator(server)["templates"]["versions"][f"{threaded['agentRuntimeId']}/1"]["unsafeReason"]
    assert "threads" in reason  # the template said why it cannot fork; the spare stands in for it

    session_id = new_session_id()
    answer = data.invoke_agent_runtime(
        agentRuntimeArn=threaded["agentRuntimeArn"], runtimeSessionId=session_id, payload=json.dumps({})
    )
    assert json.loads(answer["response"].read())["session"] == session_id
    (record,) = [s for s in sessions(server) if s["runtimeSessionId"] == session_id]
    assert record["startKind"] == "warm" and record.get("coldReason") is None  # the caller waited for no start

    replaced = wait_for(lambda: [s for s in spares_of(server, threaded) if s not in first], timeout=120, interval=0.5)
    assert len(replaced) == 1
    wait_for(lambda: operator(server)["templates"]["versions"][f"{echo['agentRuntimeId']}/1"]["template"])
    assert spares_of(server, echo) == []  # a version that forks needs no spare at pool size 0


def test_a_version_whose_fork_point_never_serves_stops_forking_and_says_why(server: HangarServer) -> None:
    """Its loop entry looked like the serving one but returned: the failed fork's reason (from the session's log)
    becomes the version's, so later sessions go straight to cold instead of each failing a fork first."""
    control = server.boto3_client("bedrock-agentcore-control")
    data = server.boto3_client("bedrock-agentcore")
    runtime = deploy(control, "neverserves")
    key = f"{runtime['agentRuntimeId']}/1"

    def marked() -> str | None:
        with pytest.raises(ClientError):  # the agent never serves, forked or cold
            data.invoke_agent_runtime(
                agentRuntimeArn=runtime["agentRuntimeArn"], runtimeSessionId=new_session_id(), payload=b"{}"
            )
        state = operator(server)["templates"]["versions"].get(key) or {}
        return state.get("unsafeReason")

    reason = wait_for(marked, timeout=180, interval=0.5)
    assert reason.startswith("the agent's event loop entered at main.py:12 (its fork point) ended before uvicorn")
    assert operator(server)["templates"]["versions"][key]["template"] is None  # retired, never restarted
