"""A forked session's pid 1 is its supervisor (no reaper process of its own): it reaps orphans on its event loop
without taking a status its own waiters need, and stops on the host's SIGTERM although it is its namespace's init.

Evidence from the host (the session's cgroup, its pid 1's pidfd, the agent's log) and from inside (exec's exit
codes, ``/proc`` of the session's pid namespace).
"""

from __future__ import annotations

import asyncio
import os
import signal
from collections.abc import AsyncIterator, Iterator

import pytest

from hangar.sandbox.selection import namespace_unsupported_reason
from tests.sandbox.fixtures import (
    AgentFiles,
    eventually,
    forked,
    namespace_backend,
    run_exec,
    started_template,
)

pytestmark = [
    pytest.mark.anyio,
    pytest.mark.skipif(namespace_unsupported_reason() is not None, reason=str(namespace_unsupported_reason())),
]

if namespace_unsupported_reason() is None:
    from hangar.sandbox.namespace.backend import NamespaceBackend
    from hangar.sandbox.namespace.templates import NamespaceTemplate

# Zombies in the session's pid namespace, as its own /proc shows them (the command's own shell excluded).
ZOMBIES = "for s in /proc/[0-9]*/stat; do read -r l < $s 2>/dev/null && case ${l##*) } in Z*) echo $s;; esac; done"


@pytest.fixture(scope="module")
def anyio_backend() -> str:
    return "asyncio"  # one loop for the module: the template outlives a test


@pytest.fixture(scope="module")
def backend() -> Iterator[NamespaceBackend]:
    with namespace_backend("hangar-pid1-") as backend:
        yield backend


@pytest.fixture(scope="module")
async def template(backend: NamespaceBackend, agent_files: AgentFiles) -> AsyncIterator[NamespaceTemplate]:
    async with started_template(backend, agent_files.spec()) as template:
        yield template


def parent(pid: int) -> int:
    with open(f"/proc/{pid}/stat", "rb") as stat:
        return int(stat.read().rsplit(b")", 1)[1].split()[1])


async def test_pid_1_is_the_supervisor_and_fast_commands_keep_their_exit_codes(
    backend: NamespaceBackend, template: NamespaceTemplate, agent_files: AgentFiles
) -> None:
    """Two processes per idle session; 40 commands at once that end at once, each with its own exit code (a reaper
    that took a status before its waiter would turn it into 255), and one killed by a signal."""
    async with forked(backend, template, agent_files.spec()) as sandbox:
        pids = sandbox.cgroup.pids()
        assert len(pids) == 2 and sandbox.proc.pid in pids  # pid 1 (host view) and the agent it forked
        (agent,) = set(pids) - {sandbox.proc.pid}
        assert parent(agent) == sandbox.proc.pid
        out, err, code, _ = await run_exec(sandbox, "tr '\\0' ' ' < /proc/1/cmdline")
        assert code == 0 and b"zygote.py" in out, err
        results = await asyncio.gather(*(run_exec(sandbox, f"exit {n}") for n in range(40)))
        assert [code for _, _, code, _ in results] == list(range(40))
        _, _, code, _ = await run_exec(sandbox, "kill -9 $$")
        assert code == -signal.SIGKILL  # as before the fold: the status as Python reports it
        out, _, code, _ = await run_exec(sandbox, "echo fine; exit 3")
        assert (out, code) == (b"fine\n", 3)


async def test_orphans_are_reaped_and_their_parents_status_is_kept(
    backend: NamespaceBackend, template: NamespaceTemplate, agent_files: AgentFiles
) -> None:
    """Grandchildren left behind (a daemon-style double fork, a background job of a command that ended) are
    reparented to pid 1 and reaped there; the commands that left them report their own exit code."""
    async with forked(backend, template, agent_files.spec()) as sandbox:
        for round_ in range(3):
            out, _, code, _ = await run_exec(
                sandbox, f"(sleep 0.05 >/dev/null 2>&1 &); (sh -c 'exit 9' >/dev/null &); echo {round_}; exit 5"
            )
            assert (out, code) == (f"{round_}\n".encode(), 5)
        _, _, code, _ = await run_exec(sandbox, "sleep 0.05 & exit 6")  # holds the output until it ends
        assert code == 6

        async def zombies() -> bytes:
            out, err, code, _ = await run_exec(sandbox, ZOMBIES)
            assert code == 0, err
            return out

        deadline = asyncio.get_running_loop().time() + 20
        while (left := await zombies()) and asyncio.get_running_loop().time() < deadline:
            await asyncio.sleep(0.05)
        assert left == b""
        assert len(sandbox.cgroup.pids()) == 2  # no leftover of the orphans either


async def test_the_hosts_sigterm_to_pid_1_stops_the_session_gracefully(
    backend: NamespaceBackend, template: NamespaceTemplate, agent_files: AgentFiles
) -> None:
    """SIGTERM to the session's pid 1 alone: as its namespace's init it gets it only through a handler; it ends its
    agent (SIGTERM, then SIGKILL after its grace) and exits, which ends the session."""
    async with forked(backend, template, agent_files.spec()) as sandbox:
        agent = [pid for pid in sandbox.cgroup.pids() if pid != sandbox.proc.pid]
        assert len(agent) == 1
        os.kill(sandbox.proc.pid, signal.SIGTERM)
        assert await eventually(lambda: sandbox.proc.poll() is not None, timeout=30)
        assert await eventually(lambda: not os.path.exists(f"/proc/{agent[0]}"), timeout=30)
        assert await eventually(lambda: sandbox.cgroup.pids() == [], timeout=30)  # it ended itself, nothing killed
