"""A version's limits reach its sandboxes: ``minimumMemoryInMiB`` becomes the cgroup's memory limit, lifecycles
up to 14 days are honoured as given (never clamped to AgentCore's old 8 hours), and StopRuntimeSession honours its
``clientToken``.

A real ``hangar serve`` with real sandboxes runs lifecycles 100,000x faster (HANGAR_SESSION_TIME_SCALE=1e-5):
1,209,600 s is 12.1 s, the old 28,800 s ceiling would be 0.29 s.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest
from botocore.exceptions import ClientError

from hangar.config import Settings
from hangar.gateway.dataplane.common import SESSION_HEADER
from tests.control.support import signed
from tests.dataplane.support import deploy, new_session_id, seeded_server, session_state, sessions
from tests.support.server import HangarServer

SCALE = 1e-5
FOURTEEN_DAYS = {"idleRuntimeSessionTimeout": 1209600, "maxLifetime": 1209600}
CGROUP_ROOT = Path("/sys/fs/cgroup")


@pytest.fixture(scope="module")
def server() -> Iterator[HangarServer]:
    with seeded_server("hangar-limits-", ["testbed"], env={"HANGAR_SESSION_TIME_SCALE": str(SCALE)}) as hangar:
        yield hangar


def _command(data: Any, runtime: dict[str, Any], session_id: str, command: str) -> str:
    response = data.invoke_agent_runtime_command(
        agentRuntimeArn=runtime["agentRuntimeArn"], runtimeSessionId=session_id, body={"command": command}
    )
    return "".join(e["chunk"].get("contentDelta", {}).get("stdout", "") for e in response["stream"])


def _memory_limit(server: HangarServer, session_id: str) -> int:
    """The memory limit of the session's sandbox, read from its cgroup on the host (v1 or v2 names)."""
    entry = next(s for s in sessions(server) if s["runtimeSessionId"] == session_id and s["state"] != "Terminated")
    sandbox_id = entry["sandboxId"]
    found = [*CGROUP_ROOT.glob(f"memory/hangar-*-{sandbox_id}"), *CGROUP_ROOT.glob(f"hangar-*-{sandbox_id}")]
    if not found:
        pytest.skip("this backend gives sandboxes no cgroup of their own")
    group = found[0]
    limit_file = group / ("memory.limit_in_bytes" if group.parent.name == "memory" else "memory.max")
    return int(limit_file.read_text())


def test_minimum_memory_raises_the_sandbox_limit_and_14_days_are_not_clamped(
    server: HangarServer, control: Any, data: Any
) -> None:
    default_mib = Settings().session_memory_mib
    bigger = deploy(
        control,
        "testbed",
        lifecycleConfiguration=FOURTEEN_DAYS,
        resourceConfigurations=[{"minimumMemoryInMiB": default_mib + 512}],
    )
    smaller = deploy(
        control,
        "testbed",
        lifecycleConfiguration=FOURTEEN_DAYS,
        resourceConfigurations=[{"minimumMemoryInMiB": 64}],  # a minimum below the installation's never lowers it
    )
    big_session, small_session = new_session_id(), new_session_id()
    assert _command(data, bigger, big_session, "echo up").strip() == "up"
    assert _command(data, smaller, small_session, "echo up").strip() == "up"
    assert _memory_limit(server, big_session) == (default_mib + 512) << 20
    assert _memory_limit(server, small_session) == default_mib << 20

    # three times the old 8-hour ceiling (scaled) later, the 14-day session is still there and answers
    time.sleep(3 * 28800 * SCALE)
    assert session_state(server, bigger["agentRuntimeId"], big_session) in ("Active", "Idle")
    assert _command(data, bigger, big_session, "echo still").strip() == "still"
    for runtime, session_id in ((bigger, big_session), (smaller, small_session)):
        data.stop_runtime_session(agentRuntimeArn=runtime["agentRuntimeArn"], runtimeSessionId=session_id)
        assert session_state(server, runtime["agentRuntimeId"], session_id) == "Terminated"


def test_a_scaled_lifecycle_still_ends_the_session(server: HangarServer, control: Any, data: Any) -> None:
    """The same scale ends a session whose idle timeout is one of days (60,000 s -> 0.6 s)."""
    runtime = deploy(
        control, "testbed", lifecycleConfiguration={"idleRuntimeSessionTimeout": 60000, "maxLifetime": 1209600}
    )
    session_id = new_session_id()
    assert _command(data, runtime, session_id, "echo up").strip() == "up"
    deadline = time.monotonic() + 60
    while session_state(server, runtime["agentRuntimeId"], session_id) != "Terminated":
        assert time.monotonic() < deadline, "the idle session was never reaped"
        time.sleep(0.1)
    ended = next(s for s in sessions(server) if s["runtimeSessionId"] == session_id)
    assert ended["endReason"] == "idle timeout"


def test_stop_runtime_session_honours_its_client_token(server: HangarServer, control: Any, data: Any) -> None:
    runtime = deploy(control, "testbed", lifecycleConfiguration=FOURTEEN_DAYS)
    arn = runtime["agentRuntimeArn"]
    session_id, other_id = new_session_id(), new_session_id()
    token = f"stop-{uuid.uuid4()}"
    for sid in (session_id, other_id):
        assert _command(data, runtime, sid, "echo up").strip() == "up"

    first = data.stop_runtime_session(agentRuntimeArn=arn, runtimeSessionId=session_id, clientToken=token)
    assert first["ResponseMetadata"]["HTTPStatusCode"] == 200
    # the retry of the same call (an answer lost on the way) gets the same answer, though the session is gone
    again = data.stop_runtime_session(agentRuntimeArn=arn, runtimeSessionId=session_id, clientToken=token)
    assert again["ResponseMetadata"]["HTTPStatusCode"] == 200 and again["runtimeSessionId"] == session_id
    with pytest.raises(ClientError) as gone:
        data.stop_runtime_session(agentRuntimeArn=arn, runtimeSessionId=session_id, clientToken=f"stop-{uuid.uuid4()}")
    assert gone.value.response["Error"]["Code"] == "ResourceNotFoundException"
    with pytest.raises(ClientError) as reused:
        data.stop_runtime_session(agentRuntimeArn=arn, runtimeSessionId=other_id, clientToken=token)
    assert reused.value.response["Error"]["Code"] == "ConflictException"
    assert session_state(server, runtime["agentRuntimeId"], other_id) in ("Active", "Idle")

    path = f"/runtimes/{quote(arn, safe='')}/stopruntimesession"
    headers = {"Content-Type": "application/json", SESSION_HEADER: other_id}
    short = signed(server, "POST", path, json.dumps({"clientToken": "too-short"}).encode(), headers)
    assert short.status_code == 400 and short.json()["fieldList"][0]["name"] == "clientToken"
    data.stop_runtime_session(agentRuntimeArn=arn, runtimeSessionId=other_id)
    assert session_state(server, runtime["agentRuntimeId"], other_id) == "Terminated"
