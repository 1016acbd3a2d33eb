"""The warm pool end to end: a real ``hangar serve`` with real (namespace) sandboxes, seen through the operator API.

A pooled sandbox is a cold-path sandbox started ahead of time, so these tests check what the pool adds: it fills to
its size as soon as a version is served, a new session claims a spare (``startKind`` warm), the pool refills,
two pooled sessions share nothing, a killed spare is replaced without touching live sessions, spares end with their
version, and a claim whose spare died falls back to a cold start.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import signal
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from hangar.config import Settings
from hangar.sandbox.process import ProcessBackend
from hangar.sessions.manager import SessionManager
from tests.dataplane.support import deploy, new_session_id, operator, seeded_server, wait_for
from tests.support.agent_env import make_target
from tests.support.server import HangarServer

POOL = 2


@pytest.fixture(scope="module")
def server() -> Iterator[HangarServer]:
    with seeded_server("hangar-pool-", ["testbed"], extra_args=["--warm-pool", str(POOL)]) as hangar:
        yield hangar


def _ready(server: HangarServer, runtime: dict[str, Any]) -> list[str]:
    key = f"{runtime['agentRuntimeId']}/{runtime['agentRuntimeVersion']}"
    return list(operator(server)["warmPool"]["ready"].get(key, []))


def _full(server: HangarServer, runtime: dict[str, Any]) -> list[str]:
    return wait_for(lambda: ids if len(ids := _ready(server, runtime)) == POOL else None, timeout=120)


def _session(server: HangarServer, session_id: str) -> dict[str, Any]:
    return next(s for s in operator(server)["sessions"] if s["runtimeSessionId"] == session_id)


def _invoke(data: Any, runtime: dict[str, Any], session_id: str, payload: dict[str, Any]) -> dict[str, Any]:
    response = data.invoke_agent_runtime(
        agentRuntimeArn=runtime["agentRuntimeArn"], runtimeSessionId=session_id, payload=json.dumps(payload)
    )
    return json.loads(response["response"].read())


def _command(data: Any, runtime: dict[str, Any], session_id: str, command: str) -> str:
    response = data.invoke_agent_runtime_command(
        agentRuntimeArn=runtime["agentRuntimeArn"], runtimeSessionId=session_id, body={"command": command}
    )
    return "".join(e["chunk"].get("contentDelta", {}).get("stdout", "") for e in response["stream"])


def _kill_sandbox(sandbox_id: str) -> int:
    """SIGKILL every process of a sandbox (found by its cgroup, which names the sandbox id)."""
    killed = 0
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            if sandbox_id not in (proc / "cgroup").read_text():
                continue
            os.kill(int(proc.name), signal.SIGKILL)
            killed += 1
        except (OSError, ProcessLookupError):
            continue
    return killed


def test_pool_fills_serves_a_new_session_and_refills(server: HangarServer, control: Any, data: Any) -> None:
    runtime = deploy(control, "testbed")
    spares = _full(server, runtime)
    session_id = new_session_id()
    assert _invoke(data, runtime, session_id, {"action": "count"})["count"] == 1
    session = _session(server, session_id)
    assert session["startKind"] == "warm" and session["sandboxId"] in spares
    refilled = _full(server, runtime)
    assert session["sandboxId"] not in refilled  # a claimed sandbox never goes back to the pool
    assert operator(server)["warmPool"]["sessionsStarted"]["warm"] >= 1
    data.stop_runtime_session(agentRuntimeArn=runtime["agentRuntimeArn"], runtimeSessionId=session_id)


def test_two_pooled_sessions_share_no_files_or_memory(server: HangarServer, control: Any, data: Any) -> None:
    runtime = deploy(control, "testbed", description="isolation")
    _full(server, runtime)
    first, second = new_session_id(), new_session_id()
    secret = f"secret-{uuid.uuid4().hex}"
    _invoke(data, runtime, first, {"action": "write", "name": "secret.txt", "text": secret})
    for _ in range(3):
        _invoke(data, runtime, first, {"action": "count"})
    # a process of the first session holds the secret in memory, its environment and /tmp
    _command(
        data,
        runtime,
        first,
        f"echo {secret} > /tmp/secret; SECRET={secret} python3 -c 'import time; s=\"{secret}\"; time.sleep(600)' "
        ">/dev/null 2>&1 &",
    )
    assert secret in _command(data, runtime, first, "cat /tmp/secret")
    assert _invoke(data, runtime, second, {"action": "count"})["count"] == 1  # its own interpreter's memory
    assert _invoke(data, runtime, second, {"action": "read", "name": "secret.txt"})["text"] is None
    half = len(secret) // 2  # the search must not carry the secret in its own command line
    search = (
        f"printf '%s%s\\n' {secret[:half]} {secret[half:]} | grep -rlsf - /tmp /home/agent /dev/shm "
        "/proc/[0-9]*/cmdline /proc/[0-9]*/environ; ls /proc | grep -c '^[0-9]'"
    )
    assert "/tmp/secret" in _command(data, runtime, first, search).split()  # the search does find it
    found = _command(data, runtime, second, search).split()
    assert found[:-1] == [], found  # no file, command line or environment of the second sandbox holds it
    assert _session(server, first)["startKind"] == _session(server, second)["startKind"] == "warm"
    assert _session(server, first)["sandboxId"] != _session(server, second)["sandboxId"]
    for session_id in (first, second):
        data.stop_runtime_session(agentRuntimeArn=runtime["agentRuntimeArn"], runtimeSessionId=session_id)


def test_killed_spare_is_replaced_and_live_sessions_carry_on(server: HangarServer, control: Any, data: Any) -> None:
    runtime = deploy(control, "testbed", description="kill")
    _full(server, runtime)
    live = new_session_id()
    assert _invoke(data, runtime, live, {"action": "count"})["count"] == 1
    spares = _full(server, runtime)
    victim = spares[0]
    assert _kill_sandbox(victim) > 0
    wait_for(lambda: victim not in (ids := _ready(server, runtime)) and len(ids) == POOL, timeout=120)
    assert _invoke(data, runtime, live, {"action": "count"})["count"] == 2  # same sandbox, same memory
    data.stop_runtime_session(agentRuntimeArn=runtime["agentRuntimeArn"], runtimeSessionId=live)


def test_spares_end_when_their_version_is_no_longer_served(server: HangarServer, control: Any, data: Any) -> None:
    runtime = deploy(control, "testbed", description="delete")
    spares = _full(server, runtime)
    control.delete_agent_runtime(agentRuntimeId=runtime["agentRuntimeId"])
    wait_for(lambda: not _ready(server, runtime), timeout=120)
    wait_for(lambda: all(_kill_sandbox(s) == 0 for s in spares), timeout=60)  # their processes are gone too


def test_a_dead_spare_is_never_handed_out(agent_env: Path, tmp_path: Path) -> None:
    """With a bare manager (no control plane): the claim finds the spare dead and starts the session cold."""
    state_root = Path(tempfile.mkdtemp(prefix="hs-"))

    async def main() -> None:
        settings = Settings(data_dir=tmp_path / "data", warm_pool_size=1)
        manager = SessionManager(settings, ProcessBackend(state_root=state_root))
        await manager.start()
        try:
            target = make_target(agent_env, "testbed")
            first = await manager.get_or_start(target, "session-0000000000000000000000000001")
            assert first.start_kind == "cold"
            deadline = time.monotonic() + 60
            while manager.pool.count() < 1:
                assert time.monotonic() < deadline, "the pool did not fill"
                await asyncio.sleep(0.05)
            spare = manager.pool._spares[(target.runtime_id, target.version)][0]
            os.kill(spare.sandbox.proc.pid, signal.SIGKILL)  # type: ignore[attr-defined]
            deadline = time.monotonic() + 10
            while spare.sandbox.alive():  # no await: nothing else may notice the death before the claim
                assert time.monotonic() < deadline, "the spare did not die"
                time.sleep(0.01)
            second = await manager.get_or_start(target, "session-0000000000000000000000000002")
            assert second.start_kind == "cold" and second.sandbox is not spare.sandbox
            assert manager.pool.claims == {"cold": 2}
        finally:
            await manager.stop()
        assert list(state_root.iterdir()) == []

    try:
        asyncio.run(main())
    finally:
        shutil.rmtree(state_root, ignore_errors=True)


def test_a_version_whose_spares_cannot_start_is_retried_with_backoff(agent_env: Path, tmp_path: Path) -> None:
    """A served version whose agent dies at import: no spare, and the retries space out (1 s, 2 s, ...)."""
    state_root = Path(tempfile.mkdtemp(prefix="hs-"))

    async def main() -> None:
        settings = Settings(data_dir=tmp_path / "data", warm_pool_size=1)
        manager = SessionManager(settings, ProcessBackend(state_root=state_root))
        broken = make_target(agent_env, "testbed", environment={"STARTUP_DELAY": "not-a-number"})

        async def served() -> list[Any]:
            return [broken]

        manager.pool.served = served
        await manager.start()
        try:
            key = (broken.runtime_id, broken.version)
            deadline = time.monotonic() + 60
            while manager.pool._backoff.get(key, (0.0, 0.0))[1] < 2:  # two failed starts in a row
                assert time.monotonic() < deadline, "the pool did not back off"
                await asyncio.sleep(0.05)
            assert manager.pool.count() == 0 and manager.pool._backoff[key][0] > time.monotonic()
        finally:
            await manager.stop()
        assert list(state_root.iterdir()) == []

    try:
        asyncio.run(main())
    finally:
        shutil.rmtree(state_root, ignore_errors=True)
