"""gVisor through the real server: a code agent deployed with boto3 runs in gVisor per runtime
(``HANGAR_SANDBOX_BACKEND=gvisor`` in its environment, on a server of the default backend) and per server
(``--sandbox gvisor``); invoke keeps state per session, commands run inside gVisor, ``coldReason`` says why it is cold.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest

from hangar.sandbox.gvisor.host import unsupported_reason
from tests.control.support import signed
from tests.dataplane.support import deploy, new_session_id, seeded_server
from tests.support.server import HangarServer

REASON = unsupported_reason("runsc", "ptrace")
pytestmark = pytest.mark.skipif(REASON is not None, reason=f"gVisor cannot run here: {REASON}")
GVISOR_KERNEL = "4.4.0"  # what gVisor's Sentry answers to uname


@pytest.fixture(scope="module")
def server() -> Iterator[HangarServer]:
    with seeded_server("hangar-gvisor-srv-", ["testbed"]) as hangar:
        yield hangar


def _invoke(data: Any, runtime: dict[str, Any], session_id: str, payload: dict[str, Any]) -> dict[str, Any]:
    response = data.invoke_agent_runtime(
        agentRuntimeArn=runtime["agentRuntimeArn"], runtimeSessionId=session_id, payload=json.dumps(payload)
    )
    answer: dict[str, Any] = json.loads(response["response"].read())
    return answer


def _command(data: Any, runtime: dict[str, Any], session_id: str, command: str) -> tuple[str, int]:
    response = data.invoke_agent_runtime_command(
        agentRuntimeArn=runtime["agentRuntimeArn"],
        runtimeSessionId=session_id,
        body={"command": command, "timeout": 60},
    )
    chunks = [event["chunk"] for event in response["stream"]]
    out = "".join(c["contentDelta"].get("stdout", "") for c in chunks if "contentDelta" in c)
    return out, chunks[-1]["contentStop"]["exitCode"]


def _session(server: HangarServer, session_id: str) -> dict[str, Any]:
    listing = signed(server, "GET", "/hangar/sessions/").json()
    return next(s for s in listing["sessions"] if s["runtimeSessionId"] == session_id)


def _serves_in_gvisor(server: HangarServer, runtime: dict[str, Any]) -> dict[str, Any]:
    data = server.boto3_client("bedrock-agentcore")
    session_id = new_session_id()
    assert _invoke(data, runtime, session_id, {"action": "count"})["count"] == 1
    assert _invoke(data, runtime, session_id, {"action": "count"})["count"] == 2  # state kept within the session
    assert _invoke(data, runtime, new_session_id(), {"action": "count"})["count"] == 1  # and not across sessions
    out, code = _command(data, runtime, session_id, "uname -r; id -u")
    assert code == 0 and out.split()[0] == GVISOR_KERNEL
    session = _session(server, session_id)
    data.stop_runtime_session(agentRuntimeArn=runtime["agentRuntimeArn"], runtimeSessionId=session_id)
    streamed = data.invoke_agent_runtime(
        agentRuntimeArn=runtime["agentRuntimeArn"],
        runtimeSessionId=new_session_id(),
        payload=json.dumps({"action": "stream_then_die", "chunks": 3}),
    )
    received = b""
    with pytest.raises(Exception, match=r"IncompleteRead|ProtocolError"):  # the agent exits after its chunks
        for chunk in streamed["response"].iter_chunks(chunk_size=16):
            received += chunk
    assert b'data: {"index": 0}' in received  # SSE chunks relayed out of gVisor as they come
    return session


def test_a_runtime_that_asks_for_gvisor_gets_it_and_the_others_do_not(server: HangarServer) -> None:
    control = server.boto3_client("bedrock-agentcore-control")
    runtime = deploy(control, "testbed", environmentVariables={"HANGAR_SANDBOX_BACKEND": "gvisor"})
    session = _serves_in_gvisor(server, runtime)
    assert session["startKind"] == "cold"
    data = server.boto3_client("bedrock-agentcore")
    later = new_session_id()
    _invoke(data, runtime, later, {"action": "count"})
    assert "gVisor" in (_session(server, later)["coldReason"] or "")  # by now the template manager was told why
    plain = deploy(control, "testbed")
    session_id = new_session_id()
    assert _invoke(data, plain, session_id, {"action": "count"})["count"] == 1
    out, code = _command(data, plain, session_id, "uname -r")
    assert code == 0 and out.strip() != GVISOR_KERNEL  # the namespace backend: the host's own kernel
    bad = deploy(control, "testbed", environmentVariables={"HANGAR_SANDBOX_BACKEND": "firecracker"})
    with pytest.raises(data.exceptions.ValidationException, match="not a sandbox: use gvisor or namespace"):
        _invoke(data, bad, new_session_id(), {"action": "count"})


def test_a_server_started_with_sandbox_gvisor_runs_every_session_in_gvisor() -> None:
    with seeded_server("hangar-gvisor-all-", ["testbed"], extra_args=["--sandbox", "gvisor"]) as hangar:
        runtime = deploy(hangar.boto3_client("bedrock-agentcore-control"), "testbed")
        session = _serves_in_gvisor(hangar, runtime)
        assert session["startKind"] == "cold"
        operator = signed(hangar, "GET", "/hangar/sessions/").json()
        assert operator["backend"] == {"backend": "gvisor", "isolates": True}
