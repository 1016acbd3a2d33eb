"""The call lease with a real process sandbox: Active while held, Idle once released, released exactly once."""

from __future__ import annotations

import gc
from pathlib import Path

import pytest

from hangar.domain.errors import RuntimeClientError, ValidationError
from hangar.sessions.manager import SessionManager
from hangar.sessions.session import SessionState
from tests.sessions.test_manager import SID, SID2, run
from tests.support.agent_env import make_target


def test_lease_marks_active_then_idle_and_a_handed_off_one_is_released_once(agent_env: Path, tmp_path: Path) -> None:
    async def scenario(manager: SessionManager) -> None:
        target = make_target(agent_env, "testbed")
        async with manager.call(target, SID) as lease:
            session = lease.session
            assert session.state is SessionState.ACTIVE and session.inflight == 1
            assert session.alive() and Path(lease.socket_path).exists()
        assert lease.released and session.state is SessionState.IDLE

        async with manager.call(target, SID) as streamed:
            on_end = streamed.hand_off()
        assert session.state is SessionState.ACTIVE  # the stream still holds it
        async with manager.use(session) as other:  # a second call overlapping the stream
            await on_end(True)
            await on_end(True)  # a second end must not release the other call's hold
            assert session.inflight == 1 and session.state is SessionState.ACTIVE
        assert other.released and session.state is SessionState.IDLE and session.inflight == 0

    run(scenario, tmp_path)


def test_lease_is_released_when_the_block_fails_or_the_stream_is_never_sent(agent_env: Path, tmp_path: Path) -> None:
    async def scenario(manager: SessionManager) -> None:
        target = make_target(agent_env, "testbed")
        with pytest.raises(ValidationError):
            async with manager.call(target, SID) as lease:
                lease.hand_off()
                raise ValidationError("the handler failed after handing the lease off")
        assert lease.session.state is SessionState.IDLE

        async with manager.call(target, SID2) as dropped:
            dropped.hand_off()  # a response that is never sent
        session = dropped.session
        assert session.state is SessionState.ACTIVE
        del dropped
        gc.collect()
        assert session.state is SessionState.IDLE

    run(scenario, tmp_path)


def test_lease_runs_a_command_and_reports_a_crash(agent_env: Path, tmp_path: Path) -> None:
    async def scenario(manager: SessionManager) -> None:
        async with manager.call(make_target(agent_env, "testbed"), SID) as lease:
            events = [e async for e in lease.exec("echo leased", 10.0)]
            assert b"leased" in b"".join(e.data for e in events) and events[-1].exit_code == 0
            assert (await lease.session.stats()).pids >= 1
            with pytest.raises(RuntimeClientError, match="the agent process exited"):
                await lease.request("POST", "/invocations", [], b'{"action": "exit"}')
            assert lease.session.state is SessionState.TERMINATED
            assert await lease.broken()  # reporting again is harmless: the session stays ended
        assert lease.released and manager.live_sessions() == []

    run(scenario, tmp_path)
