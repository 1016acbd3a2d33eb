"""Agents that misbehave (tests/support/agents/misbehave): one that never reads its body nor answers, one that
answers a byte a second, one that floods stdout. Each invoke ends cleanly (an AWS-shaped error, or a stream that
arrives as it is written), the server stays healthy, and once the session stops nothing of its sandbox is left:
no process, no cgroup or state directory, no uid lease.
"""

from __future__ import annotations

import contextlib
import json
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials

from tests.dataplane.support import deploy, new_session_id, seeded_server, session_state, sessions, wait_for
from tests.support.server import HangarServer, read_admin_key

FAULT = "X-Amzn-Bedrock-AgentCore-Runtime-Custom-Fault"
SESSION = "X-Amzn-Bedrock-AgentCore-Runtime-Session-Id"
LEASES = Path("/run/hangar/uids")
# Lifecycle settings are seconds with a 60 s minimum on the wire; the server runs them 50x faster.
TIME_SCALE = "0.02"


@pytest.fixture(scope="module")
def server() -> Iterator[HangarServer]:
    with seeded_server("hangar-faults-", ["misbehave"], env={"HANGAR_SESSION_TIME_SCALE": TIME_SCALE}) as hangar:
        yield hangar


@pytest.fixture(scope="module")
def runtime(server: HangarServer) -> dict[str, Any]:
    control = server.boto3_client("bedrock-agentcore-control")
    # idle 60 s and max lifetime 400 s on the wire: 1.2 s and 8 s here.
    lifecycle = {"idleRuntimeSessionTimeout": 60, "maxLifetime": 400}
    return deploy(control, "misbehave", lifecycleConfiguration=lifecycle)


def signed_request(server: HangarServer, arn: str, session_id: str, fault: str, body: bytes) -> httpx.Request:
    key_id, secret = read_admin_key(server.credentials_file)
    url = f"{server.url}/runtimes/{arn.replace(':', '%3A').replace('/', '%2F')}/invocations"
    headers = {SESSION: session_id, FAULT: fault, "Content-Type": "application/json"}
    aws = AWSRequest(method="POST", url=url, data=body, headers=headers)
    SigV4Auth(Credentials(key_id, secret), "bedrock-agentcore", "us-west-2").add_auth(aws)
    return httpx.Request("POST", url, headers=dict(aws.headers.items()), content=body)


def sandbox_of(server: HangarServer, runtime_id: str, session_id: str) -> str:
    for entry in sessions(server):
        if entry["runtimeId"] == runtime_id and entry["runtimeSessionId"] == session_id:
            return str(entry["sandboxId"])
    raise AssertionError(f"no session {session_id}")


def leftovers(sandbox_id: str) -> list[str]:
    """Anything of the sandbox still on the host: processes (command line or cgroup), files and directories
    (state, cgroup, /dev/shm), uid lease files naming it."""
    found = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            text = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            text += " " + (proc / "cgroup").read_text(errors="replace")
        except OSError:
            continue
        if sandbox_id in text:
            found.append(f"process {proc.name}: {text.strip()[:200]}")
    roots = [p for p in ("/tmp", "/run", "/sys/fs/cgroup", "/dev/shm") if Path(p).exists()]
    done = subprocess.run(
        ["find", *roots, "-maxdepth", "5", "-name", f"*{sandbox_id}*"], capture_output=True, text=True, check=False
    )
    found += [f"file {line}" for line in done.stdout.splitlines() if line]
    if LEASES.is_dir():
        for lease in LEASES.iterdir():
            try:
                if sandbox_id in lease.read_text(errors="replace"):
                    found.append(f"uid lease {lease}")
            except OSError:
                continue
    return found


def stop_and_check_clean(server: HangarServer, runtime: dict[str, Any], session_id: str, sandbox_id: str) -> None:
    data = server.boto3_client("bedrock-agentcore")
    if session_state(server, runtime["agentRuntimeId"], session_id) != "Terminated":
        assert leftovers(sandbox_id), "a live sandbox should be visible on the host (or this check proves nothing)"
        with contextlib.suppress(data.exceptions.ResourceNotFoundException):  # it may end on its own meanwhile
            data.stop_runtime_session(agentRuntimeArn=runtime["agentRuntimeArn"], runtimeSessionId=session_id)
    wait_for(lambda: session_state(server, runtime["agentRuntimeId"], session_id) == "Terminated", timeout=60)
    wait_for(lambda: not leftovers(sandbox_id) or None, timeout=30)
    assert leftovers(sandbox_id) == []
    assert httpx.get(f"{server.url}/healthz", timeout=10).status_code == 200


def ok_invoke(server: HangarServer, runtime: dict[str, Any], session_id: str) -> None:
    with httpx.Client(timeout=60) as client:
        answer = client.send(signed_request(server, runtime["agentRuntimeArn"], session_id, "none", b"{}"))
    assert answer.status_code == 200, answer.text
    assert answer.json() == {"ok": True}


def test_agent_that_never_reads_its_body(server: HangarServer, runtime: dict[str, Any]) -> None:
    """A megabyte the agent never reads and an answer that never comes: the session's max lifetime ends it, and
    the caller gets an AWS-shaped error instead of a hang."""
    session_id = new_session_id()
    ok_invoke(server, runtime, session_id)  # the session exists, and its agent serves
    sandbox_id = sandbox_of(server, runtime["agentRuntimeId"], session_id)
    request = signed_request(server, runtime["agentRuntimeArn"], session_id, "noread", b"x" * (1024 * 1024))
    with httpx.Client(timeout=120) as client:
        answer = client.send(request)
    assert answer.status_code == 424, answer.text
    assert answer.headers.get("x-amzn-ErrorType") == "RuntimeClientError"
    assert isinstance(answer.json()["message"], str)
    stop_and_check_clean(server, runtime, session_id, sandbox_id)


def test_agent_that_answers_a_byte_a_second(server: HangarServer, runtime: dict[str, Any]) -> None:
    """The bytes reach the caller as the agent writes them: several reads, not one buffered answer."""
    session_id = new_session_id()
    request = signed_request(server, runtime["agentRuntimeArn"], session_id, "drip", b"{}")
    pieces: list[bytes] = []
    with httpx.Client(timeout=60) as client:
        answer = client.send(request, stream=True)
        try:
            assert answer.status_code == 200
            pieces = [piece for piece in answer.iter_raw() if piece]
        finally:
            answer.close()
    assert b"".join(pieces) == b"....."
    assert len(pieces) >= 3, f"the drip arrived in {len(pieces)} piece(s): buffered, not streamed"
    sandbox_id = sandbox_of(server, runtime["agentRuntimeId"], session_id)
    stop_and_check_clean(server, runtime, session_id, sandbox_id)


def test_agent_that_floods_stdout(server: HangarServer, runtime: dict[str, Any]) -> None:
    """The flood fills the sandbox's own log budget, not the server: the agent keeps answering, the server's own
    log does not grow with it, and stopping the session takes everything away."""
    session_id = new_session_id()
    log_before = len(server.log())
    with httpx.Client(timeout=60) as client:
        answer = client.send(signed_request(server, runtime["agentRuntimeArn"], session_id, "flood", b"{}"))
    assert answer.status_code == 200, answer.text
    sandbox_id = sandbox_of(server, runtime["agentRuntimeId"], session_id)
    for _ in range(3):
        ok_invoke(server, runtime, session_id)
        assert httpx.get(f"{server.url}/healthz", timeout=10).status_code == 200
    assert len(server.log()) - log_before < 1024 * 1024, "the agent's output reached the server's own log"
    stop_and_check_clean(server, runtime, session_id, sandbox_id)
    listed = json.loads(json.dumps(sessions(server)))
    assert all(entry["state"] in ("Active", "Idle", "Terminated", "HealthyBusy") for entry in listed)
