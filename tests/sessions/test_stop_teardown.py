"""A stop answers once the sandbox is dead; its release (state dir, leases) finishes behind it, bounded.

Real ``process`` sandboxes under a real ``SessionManager`` (``tests/sessions/test_manager.run``: after
``manager.stop`` nothing of any sandbox is left, so shutdown waits for the teardowns still running)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from hangar.sandbox.supervised import SupervisedSandbox
from hangar.sessions import teardown
from hangar.sessions.manager import SessionManager
from hangar.sessions.session import SessionState
from tests.sessions.test_manager import SID, call, run, wait_for
from tests.support.agent_env import make_target


def _gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    return False


def test_stop_answers_with_the_sandbox_dead_and_the_release_follows(agent_env: Path, tmp_path: Path) -> None:
    async def scenario(manager: SessionManager) -> None:
        target = make_target(agent_env, "testbed")
        first = await manager.get_or_start(target, SID)
        await call(manager, first, {"action": "count"})
        sandbox = first.sandbox
        assert isinstance(sandbox, SupervisedSandbox)
        pid, state = sandbox.proc.pid, sandbox.state.path
        assert await manager.stop_session(target.runtime_id, SID)
        assert first.state is SessionState.TERMINATED and sandbox.dead.is_set() and not sandbox.alive()
        assert _gone(pid)  # killed and reaped before the answer, whatever is still being released
        second = await manager.get_or_start(target, SID)  # the same id right after: a fresh sandbox
        assert second is not first and second.sandbox.id != sandbox.id
        assert (await call(manager, second, {"action": "count"}))["count"] == 1
        await wait_for(lambda: not state.exists() and not manager.teardowns.behind)

    run(scenario, tmp_path)


def test_a_full_backlog_makes_a_stop_wait_for_its_whole_release(
    agent_env: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(teardown, "BACKLOG", 0)

    async def scenario(manager: SessionManager) -> None:
        target = make_target(agent_env, "testbed")
        session = await manager.get_or_start(target, SID)
        await call(manager, session, {"action": "count"})
        state = session.sandbox.state.path  # type: ignore[attr-defined]
        assert await manager.stop_session(target.runtime_id, SID)
        assert not state.exists() and not manager.teardowns.behind

    run(scenario, tmp_path)
