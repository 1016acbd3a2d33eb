"""The lifecycle loop's work follows changes, not the number of sessions: real ``process`` sandboxes under a real
session manager. Idle sessions are looked at when a deadline of theirs comes, not on every pass; an idle agent that
exits on its own is noticed through its pidfd (no request, no timeout) and its session ends."""

from __future__ import annotations

import asyncio
import os
import signal
from pathlib import Path

from hangar.sessions.manager import SessionManager
from hangar.sessions.session import SessionState
from tests.sessions.test_manager import run, wait_for
from tests.support.agent_env import make_target

SIDS = [f"session-looks-00000000000000000000000{index}" for index in range(3)]


def test_idle_sessions_cost_no_look_until_a_deadline(agent_env: Path, tmp_path: Path) -> None:
    async def scenario(manager: SessionManager) -> None:
        target = make_target(agent_env, "testbed")  # 15 minutes idle, 8 hours max
        sessions = [await manager.get_or_start(target, sid) for sid in SIDS]
        await wait_for(lambda: manager.lifecycle.looks >= len(sessions))  # each one's first look, at its start
        looks = manager.lifecycle.looks
        await asyncio.sleep(2.5)  # passes of the loop happen (the warm pool's sweep), none of them looks
        assert manager.lifecycle.looks == looks
        assert all(s.state is SessionState.IDLE for s in sessions)

    run(scenario, tmp_path)


def test_an_idle_agent_that_exits_ends_its_session(agent_env: Path, tmp_path: Path) -> None:
    async def scenario(manager: SessionManager) -> None:
        session = await manager.get_or_start(make_target(agent_env, "testbed"), SIDS[0])
        pid = session.sandbox.exit_pid()
        assert pid is not None and manager.lifecycle.watched_exits() == 1  # a pidfd, not a poll of alive()
        os.kill(pid, signal.SIGKILL)
        await wait_for(lambda: session.state is SessionState.TERMINATED)  # 15 minutes before its idle timeout
        assert session.end_reason == "agent exited"
        assert manager.live_sessions() == [] and manager.lifecycle.watched_exits() == 0

    run(scenario, tmp_path)
