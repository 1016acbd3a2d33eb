"""The session manager with real ``process`` sandboxes: reuse, isolation of sessions, pinning, caps, end paths."""

from __future__ import annotations

import asyncio
import json
import shutil
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest

from hangar.config import Settings
from hangar.domain.errors import RuntimeClientError, ServiceQuotaExceededError
from hangar.sandbox.process import ProcessBackend
from hangar.sessions.manager import SessionManager
from hangar.sessions.session import Session, SessionState
from tests.support.agent_env import make_target

SID = "session-0000000000000000000000000001"
SID2 = "session-0000000000000000000000000002"


def run(scenario: Callable[[SessionManager], Awaitable[None]], tmp_path: Path, **settings: object) -> None:
    """Run ``scenario`` against a started manager; every sandbox is stopped afterwards, whatever happened."""

    state_root = Path(tempfile.mkdtemp(prefix="hs-"))  # short: socket paths must fit in 108 bytes

    async def main() -> None:
        config = Settings(data_dir=tmp_path / "data", **settings)  # type: ignore[arg-type]
        manager = SessionManager(config, ProcessBackend(state_root=state_root))
        await manager.start()
        try:
            await scenario(manager)
        finally:
            await manager.stop()
        assert manager.live_sessions() == []
        assert list(state_root.iterdir()) == []

    try:
        asyncio.run(main())
    finally:
        shutil.rmtree(state_root, ignore_errors=True)


async def call(manager: SessionManager, session: Session, payload: dict[str, object]) -> dict[str, object]:
    async with manager.use(session) as lease:
        response = await lease.request(
            "POST",
            session.target.path,
            [
                ("content-type", "application/json"),
                ("x-amzn-bedrock-agentcore-runtime-session-id", session.key.session_id),
            ],
            json.dumps(payload).encode(),
        )
        body = await response.read(1024 * 1024)
        await response.aclose()
    assert response.status_code == 200, body
    return json.loads(body)


async def wait_for(predicate: Callable[[], bool], timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached in time")
        await asyncio.sleep(0.05)


def test_session_keeps_state_and_files_between_calls(agent_env: Path, tmp_path: Path) -> None:
    async def scenario(manager: SessionManager) -> None:
        target = make_target(agent_env, "testbed")
        first = await manager.get_or_start(target, SID)
        assert (await call(manager, first, {"action": "count"}))["count"] == 1
        await call(manager, first, {"action": "write", "name": "note.txt", "text": "kept"})
        again = await manager.get_or_start(target, SID)
        assert again is first
        assert (await call(manager, again, {"action": "count"}))["count"] == 2
        assert (await call(manager, again, {"action": "read", "name": "note.txt"}))["text"] == "kept"
        other = await manager.get_or_start(target, SID2)
        assert other.sandbox.id != first.sandbox.id
        assert (await call(manager, other, {"action": "count"}))["count"] == 1
        assert (await call(manager, other, {"action": "read", "name": "note.txt"}))["text"] is None

    run(scenario, tmp_path)


def test_concurrent_first_calls_start_one_sandbox(agent_env: Path, tmp_path: Path) -> None:
    async def scenario(manager: SessionManager) -> None:
        target = make_target(agent_env, "testbed")
        sessions = await asyncio.gather(*(manager.get_or_start(target, SID) for _ in range(8)))
        assert len({id(s) for s in sessions}) == 1
        assert len(manager.live_sessions()) == 1

    run(scenario, tmp_path)


def test_session_stays_on_the_version_of_its_first_call(agent_env: Path, tmp_path: Path) -> None:
    async def scenario(manager: SessionManager) -> None:
        v1 = make_target(agent_env, "testbed", version="1", environment={"AGENT_VERSION": "1"})
        v2 = make_target(agent_env, "testbed", version="2", environment={"AGENT_VERSION": "2"})
        pinned = await manager.get_or_start(v1, SID)
        assert (await manager.get_or_start(v2, SID)) is pinned
        assert (await call(manager, pinned, {"action": "count"}))["version"] == "1"
        fresh = await manager.get_or_start(v2, SID2)
        assert (await call(manager, fresh, {"action": "count"}))["version"] == "2"

    run(scenario, tmp_path)


def test_caps_per_runtime_and_global(agent_env: Path, tmp_path: Path) -> None:
    async def scenario(manager: SessionManager) -> None:
        a = make_target(agent_env, "testbed", runtime_id="agenta-abcdefghij")
        b = make_target(agent_env, "testbed", runtime_id="agentb-abcdefghij")
        await manager.get_or_start(a, SID)
        with pytest.raises(ServiceQuotaExceededError, match="max_sessions_per_runtime"):
            await manager.get_or_start(a, SID2)
        await manager.get_or_start(b, SID)
        c = make_target(agent_env, "testbed", runtime_id="agentc-abcdefghij")
        with pytest.raises(ServiceQuotaExceededError, match="max_sessions="):
            await manager.get_or_start(c, SID)
        assert await manager.stop_session(a.runtime_id, SID)
        await manager.get_or_start(a, SID2)  # a slot was freed

    run(scenario, tmp_path, max_sessions=2, max_sessions_per_runtime=1)


def test_stop_ends_the_sandbox_and_a_later_call_starts_fresh(agent_env: Path, tmp_path: Path) -> None:
    async def scenario(manager: SessionManager) -> None:
        target = make_target(agent_env, "testbed")
        first = await manager.get_or_start(target, SID)
        await call(manager, first, {"action": "count"})
        assert await manager.stop_session(target.runtime_id, SID)
        assert first.state is SessionState.TERMINATED and not first.sandbox.alive()
        assert not await manager.stop_session(target.runtime_id, SID)
        second = await manager.get_or_start(target, SID)
        assert second is not first
        assert (await call(manager, second, {"action": "count"}))["count"] == 1
        states = {(r["sandboxId"], r["state"]) for r in manager.list_sessions()}
        assert (first.sandbox.id, "Terminated") in states and (second.sandbox.id, "Idle") in states

    run(scenario, tmp_path)


def test_idle_timeout_and_max_lifetime_end_sessions(agent_env: Path, tmp_path: Path) -> None:
    async def scenario(manager: SessionManager) -> None:
        # time scale 0.01: idle 100 s -> 1 s, max lifetime 300 s -> 3 s
        idle = await manager.get_or_start(make_target(agent_env, "testbed", idle_timeout_s=100), SID)
        await wait_for(lambda: idle.state is SessionState.TERMINATED)
        assert idle.end_reason == "idle timeout" and not idle.sandbox.alive()
        target = make_target(agent_env, "testbed", idle_timeout_s=100, max_lifetime_s=300)
        busy = await manager.get_or_start(target, SID2)
        while busy.state is not SessionState.TERMINATED:  # keep it active: only max lifetime can end it
            await call(manager, busy, {"action": "count"}) if busy.sandbox.alive() else None
            await asyncio.sleep(0.2)
            assert time.time() - busy.started_at < 30
        assert busy.end_reason == "max lifetime reached"

    run(scenario, tmp_path, session_time_scale=0.01)


def test_healthy_busy_keeps_a_session_past_its_idle_timeout(agent_env: Path, tmp_path: Path) -> None:
    async def scenario(manager: SessionManager) -> None:
        session = await manager.get_or_start(make_target(agent_env, "async_task", idle_timeout_s=100), SID)
        await call(manager, session, {"action": "start", "seconds": 3})
        await asyncio.sleep(2)  # two idle timeouts pass while the job runs
        assert session.state is SessionState.ACTIVE and session.busy
        await wait_for(lambda: session.state is SessionState.TERMINATED)
        assert session.end_reason == "idle timeout"
        assert session.ended_at is not None and session.ended_at - session.started_at >= 3

    run(scenario, tmp_path, session_time_scale=0.01)


def test_agent_that_never_answers_ping_is_ended_with_a_clear_error(agent_env: Path, tmp_path: Path) -> None:
    async def scenario(manager: SessionManager) -> None:
        target = make_target(agent_env, "testbed", environment={"STARTUP_DELAY": "600"})
        with pytest.raises(RuntimeClientError, match="ping"):
            await manager.get_or_start(target, SID)
        assert manager.live_sessions() == []

    run(scenario, tmp_path, session_start_timeout_s=3)


def test_crashed_agent_ends_its_session(agent_env: Path, tmp_path: Path) -> None:
    async def scenario(manager: SessionManager) -> None:
        session = await manager.get_or_start(make_target(agent_env, "testbed"), SID)
        async with manager.use(session) as lease:
            assert session.state is SessionState.ACTIVE
            with pytest.raises(RuntimeClientError, match="the agent process exited"):
                await lease.request("POST", "/invocations", [], b'{"action": "exit"}')
            assert session.state is SessionState.TERMINATED and session.end_reason == "agent exited"
        assert lease.released and manager.live_sessions() == []

    run(scenario, tmp_path)


def test_warm_pool_hands_a_ready_sandbox_to_the_next_session(agent_env: Path, tmp_path: Path) -> None:
    async def scenario(manager: SessionManager) -> None:
        target = make_target(agent_env, "testbed", idle_timeout_s=300)  # spares live 3 s (scale 0.01)
        first = await manager.get_or_start(target, SID)
        await wait_for(lambda: manager.pool.count() == 1)
        spare_id = manager.pool._spares[(target.runtime_id, target.version)][0].sandbox.id
        second = await manager.get_or_start(target, SID2)
        assert second.sandbox.id == spare_id != first.sandbox.id
        assert (await call(manager, second, {"action": "count"}))["count"] == 1
        await wait_for(lambda: manager.pool.count() == 1)  # refilled
        other_version = make_target(agent_env, "testbed", version="2")
        assert manager.pool.take(other_version) == (None, [])
        await manager.stop_session(target.runtime_id, SID)
        await manager.stop_session(target.runtime_id, SID2)
        await wait_for(lambda: manager.pool.count() == 0)  # unused spares end after the idle timeout

    run(scenario, tmp_path, warm_pool_size=1, session_time_scale=0.01)


def test_healthy_busy_counts_only_with_time_of_last_update(agent_env: Path, tmp_path: Path) -> None:
    async def scenario(manager: SessionManager) -> None:
        stamped = make_target(agent_env, "busyping", idle_timeout_s=100, environment={"STAMP": "1"})
        bare = make_target(agent_env, "busyping", runtime_id="busybare-abcdefghij", idle_timeout_s=100)
        kept = await manager.get_or_start(stamped, SID)
        reaped = await manager.get_or_start(bare, SID)
        await wait_for(lambda: reaped.state is SessionState.TERMINATED)
        assert reaped.end_reason == "idle timeout"
        assert kept.state is SessionState.ACTIVE and kept.busy
        assert time.time() - kept.last_activity < kept.idle_timeout_s

    run(scenario, tmp_path, session_time_scale=0.01)
