"""Deploying test agents through the real control plane, and small helpers of the data-plane e2e tests."""

from __future__ import annotations

import shutil
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

from tests.support.agent_env import agent_code
from tests.support.server import HangarServer

ROLE = "arn:aws:iam::123456789012:role/HangarAgentRole"
BUCKET = "agents"
T = TypeVar("T")


def seed(data_dir: Path, *agents: str) -> None:
    """Copy test agents / examples into the server's artifact store as s3://agents/<name>/."""
    for name in agents:
        target = data_dir / "artifacts" / BUCKET / name
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copytree(agent_code(name), target, ignore=shutil.ignore_patterns("__pycache__"))


@contextmanager
def world_readable_dir(prefix: str) -> Iterator[Path]:
    """A data dir under /tmp that sandbox uids can traverse (pytest's tmp dirs are 0700), removed afterwards."""
    path = Path(tempfile.mkdtemp(prefix=prefix, dir="/tmp"))
    path.chmod(0o755)
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


@contextmanager
def seeded_server(prefix: str, agents: Sequence[str], **server: Any) -> Iterator[HangarServer]:
    """A running ``hangar serve`` whose artifact store holds ``agents``, in a data dir sandbox uids can traverse."""
    with world_readable_dir(prefix) as root:
        seed(root / "data", *agents)
        hangar = HangarServer(data_dir=root / "data", **server).start()
        try:
            yield hangar
        finally:
            hangar.stop()


def new_session_id() -> str:
    return f"test-session-{uuid.uuid4()}"


def wait_for(check: Callable[[], T | None], timeout: float = 120.0, interval: float = 0.1) -> T:
    """Poll ``check`` until it returns something truthy (bounded)."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not reached within {timeout}s")
        time.sleep(interval)


def deploy(control: Any, agent: str, **extra: Any) -> dict[str, Any]:
    """Create a runtime from s3://agents/<agent>/ and wait until it is READY; returns GetAgentRuntime."""
    created = control.create_agent_runtime(
        agentRuntimeName=f"{agent}_{uuid.uuid4().hex[:8]}",
        agentRuntimeArtifact={
            "codeConfiguration": {
                "code": {"s3": {"bucket": BUCKET, "prefix": f"{agent}/"}},
                "runtime": "PYTHON_3_11",
                "entryPoint": ["main.py"],
            }
        },
        roleArn=ROLE,
        **extra,
    )
    runtime_id = created["agentRuntimeId"]

    def ready() -> dict[str, Any] | None:
        doc = control.get_agent_runtime(agentRuntimeId=runtime_id)
        if doc["status"] in ("CREATE_FAILED", "UPDATE_FAILED"):
            raise AssertionError(f"build of {agent} failed: {doc.get('failureReason')}")
        return doc if doc["status"] == "READY" else None

    return wait_for(ready, timeout=300)


def operator(server: HangarServer) -> dict[str, Any]:
    """The operator API's ``GET /hangar/sessions/`` document: sessions, backend, warm pool, templates, spares."""
    from tests.control.support import signed

    response = signed(server, "GET", "/hangar/sessions/")
    assert response.status_code == 200, response.text
    answer: dict[str, Any] = response.json()
    return answer


def sessions(server: HangarServer) -> list[dict[str, Any]]:
    """The operator API's session list."""
    return list(operator(server)["sessions"])


def session_state(server: HangarServer, runtime_id: str, session_id: str) -> str | None:
    """State of the newest record of this session (None when the server never saw it)."""
    for entry in sessions(server):
        if entry["runtimeId"] == runtime_id and entry["runtimeSessionId"] == session_id:
            return str(entry["state"])
    return None
