"""Hangar killed with SIGKILL and started again: no orphan processes or files, old sessions reported Terminated."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.dataplane.support import deploy, new_session_id, seed, sessions, world_readable_dir
from tests.support.server import HangarServer


@pytest.fixture
def data_dir() -> Iterator[Path]:
    with world_readable_dir("hangar-restart-") as root:
        seed(root / "data", "testbed")
        yield root / "data"


def _processes_mentioning(needles: list[str]) -> list[str]:
    """Processes whose command line or cgroup names one of ``needles`` (sandbox ids name cgroups and state dirs)."""
    found = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            text = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            text += " " + (proc / "cgroup").read_text(errors="replace")
        except OSError:
            continue
        if any(needle in text for needle in needles):
            found.append(f"{proc.name}: {text.strip()}")
    return found


def _files_named(needles: list[str]) -> list[str]:
    roots = [p for p in ("/tmp", "/run", "/sys/fs/cgroup", "/dev/shm") if Path(p).exists()]
    found: list[str] = []
    for needle in needles:
        done = subprocess.run(
            ["find", *roots, "-maxdepth", "5", "-name", f"*{needle}*"], capture_output=True, text=True, check=False
        )
        found += [line for line in done.stdout.splitlines() if line]
    return found


def test_sigkill_and_restart_leaves_no_orphans(data_dir: Path) -> None:
    server = HangarServer(data_dir=data_dir).start()
    try:
        control, data = server.boto3_client("bedrock-agentcore-control"), server.boto3_client("bedrock-agentcore")
        runtime = deploy(control, "testbed")
        session_ids = [new_session_id(), new_session_id()]
        for session_id in session_ids:
            response = data.invoke_agent_runtime(
                agentRuntimeArn=runtime["agentRuntimeArn"], runtimeSessionId=session_id, payload=b"{}"
            )
            assert json.loads(response["response"].read())["count"] == 1
        sandbox_ids = [str(s["sandboxId"]) for s in sessions(server) if s["state"] != "Terminated"]
        assert len(sandbox_ids) == 2
        assert _processes_mentioning(sandbox_ids), "the sandboxes' processes should be visible before the kill"
        server.kill()
        server.start()
        assert _processes_mentioning(sandbox_ids) == []
        assert _files_named(sandbox_ids) == []
        reported = {s["runtimeSessionId"]: s for s in sessions(server)}
        for session_id in session_ids:
            assert reported[session_id]["state"] == "Terminated"
            assert reported[session_id]["endReason"] == "Hangar restarted"
        fresh = data.invoke_agent_runtime(
            agentRuntimeArn=runtime["agentRuntimeArn"], runtimeSessionId=session_ids[0], payload=b"{}"
        )
        assert json.loads(fresh["response"].read())["count"] == 1  # a new sandbox: no state survived
    finally:
        server.stop()
