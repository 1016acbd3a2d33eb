"""Session lifecycle through the wire: idle reaping, max lifetime, HealthyBusy, version pinning.

The server runs lifecycles 50x faster (HANGAR_SESSION_TIME_SCALE=0.02): idleRuntimeSessionTimeout=60 is 1.2 s.
"""

from __future__ import annotations

import json
import time
from typing import Any

from tests.dataplane.support import ROLE, deploy, new_session_id, session_state, wait_for
from tests.support.server import HangarServer


def _call(data: Any, arn: str, session_id: str, payload: object, **extra: Any) -> dict[str, Any]:
    response = data.invoke_agent_runtime(
        agentRuntimeArn=arn, runtimeSessionId=session_id, payload=json.dumps(payload), **extra
    )
    return json.loads(response["response"].read())


def test_idle_sessions_are_reaped_and_max_lifetime_ends_used_ones(
    data: Any, control: Any, server: HangarServer
) -> None:
    # idle 90 s -> 1.8 s, max lifetime 200 s -> 4 s
    runtime = deploy(control, "testbed", lifecycleConfiguration={"idleRuntimeSessionTimeout": 90, "maxLifetime": 200})
    arn, runtime_id = runtime["agentRuntimeArn"], runtime["agentRuntimeId"]
    idle, used = new_session_id(), new_session_id()
    _call(data, arn, idle, {"action": "count"})
    _call(data, arn, used, {"action": "count"})
    until = time.monotonic() + 3.0
    while time.monotonic() < until:  # activity keeps `used` alive past its idle timeout
        assert _call(data, arn, used, {"action": "count"})["count"] >= 2
        time.sleep(0.3)
    assert session_state(server, runtime_id, used) in ("Idle", "Active")
    assert session_state(server, runtime_id, idle) == "Terminated"
    wait_for(lambda: session_state(server, runtime_id, used) == "Terminated", timeout=30)
    reasons = {e["runtimeSessionId"]: e["endReason"] for e in _records(server, runtime_id)}
    assert reasons == {idle: "idle timeout", used: "max lifetime reached"}


def _records(server: HangarServer, runtime_id: str) -> list[dict[str, Any]]:
    from tests.dataplane.support import sessions

    return [e for e in sessions(server) if e["runtimeId"] == runtime_id]


def test_healthy_busy_keeps_a_session_past_its_idle_timeout(data: Any, control: Any, server: HangarServer) -> None:
    runtime = deploy(control, "async_task", lifecycleConfiguration={"idleRuntimeSessionTimeout": 60})
    session_id = new_session_id()
    started = _call(data, runtime["agentRuntimeArn"], session_id, {"action": "start", "seconds": 4})
    assert started["started"] is True
    time.sleep(2.5)  # two idle timeouts (1.2 s each) pass while the background job runs
    assert session_state(server, runtime["agentRuntimeId"], session_id) == "Active"
    wait_for(lambda: session_state(server, runtime["agentRuntimeId"], session_id) == "Terminated", timeout=60)
    [record] = [e for e in _records(server, runtime["agentRuntimeId"]) if e["runtimeSessionId"] == session_id]
    assert record["endReason"] == "idle timeout"
    assert record["endedAt"] - record["startedAt"] >= 4


def test_a_session_stays_on_its_version_when_the_endpoint_moves(data: Any, control: Any) -> None:
    runtime = deploy(control, "testbed", environmentVariables={"AGENT_VERSION": "one"})
    arn, runtime_id = runtime["agentRuntimeArn"], runtime["agentRuntimeId"]
    old_session = new_session_id()
    assert _call(data, arn, old_session, {"action": "count"})["version"] == "one"
    control.update_agent_runtime(
        agentRuntimeId=runtime_id,
        agentRuntimeArtifact=runtime["agentRuntimeArtifact"],
        roleArn=ROLE,
        networkConfiguration={"networkMode": "PUBLIC"},
        environmentVariables={"AGENT_VERSION": "two"},
    )
    wait_for(
        lambda: (
            control.get_agent_runtime_endpoint(agentRuntimeId=runtime_id, endpointName="DEFAULT").get("liveVersion")
            == "2"
        )
    )
    pinned = _call(data, arn, old_session, {"action": "count"})
    assert pinned["version"] == "one" and pinned["count"] == 2
    assert _call(data, arn, new_session_id(), {"action": "count"})["version"] == "two"
