"""The ``process`` backend: the agent runs as a plain host process. It does NOT isolate anything.

It exists for development machines without namespaces, and as the portable double of ``namespace``: same
supervisor, same Unix-socket relay, same state layout. Every agent gets its own free loopback port (``PORT``), so
two sandboxes on one host never collide, but an agent can read the host's files, reach every host port and see
every process. Hangar logs a WARNING whenever this backend starts.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import socket
import tempfile
from pathlib import Path

from hangar.sandbox.base import SandboxBackend, SandboxSpec, SandboxStats
from hangar.sandbox.state import (
    create_state,
    list_states,
    process_start_time,
    same_process,
    session_members,
)
from hangar.sandbox.supervised import (
    SUPERVISOR,
    Channels,
    SupervisedSandbox,
    agent_environment,
    spawn,
    supervisor_argv,
    wait_ready,
)

log = logging.getLogger(__name__)
KILL_ROUNDS = 200
KILL_PAUSE_S = 0.005


def free_loopback_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def kill_session(sid: int) -> None:
    """SIGKILL every process of session ``sid`` until none is left (bounded); a process that called setsid()
    itself escapes: this backend does not isolate."""
    if not Path("/proc/self/stat").exists():
        with contextlib.suppress(ProcessLookupError, PermissionError):
            # SAFETY: sid is the session our own supervisor leads (cleanup checks its start time first).
            os.killpg(sid, signal.SIGKILL)
        return
    for _ in range(KILL_ROUNDS):
        members = [pid for pid in session_members(sid) if not _is_zombie(pid)]
        if not members:
            return
        for pid in members:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                # SAFETY: only members of that session, re-read from /proc each round.
                os.kill(pid, signal.SIGKILL)
        await asyncio.sleep(KILL_PAUSE_S)


def _is_zombie(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z"
    except OSError:
        return True


class ProcessSandbox(SupervisedSandbox):
    async def stats(self) -> SandboxStats:
        memory = cpu = 0.0
        members = session_members(self.proc.pid) if self.alive() else []
        page = os.sysconf("SC_PAGE_SIZE")
        ticks = os.sysconf("SC_CLK_TCK")
        for pid in members:
            try:
                rss_pages = int(Path(f"/proc/{pid}/statm").read_text().split()[1])
                fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            except (OSError, IndexError, ValueError):
                continue
            memory += rss_pages * page
            cpu += (int(fields[11]) + int(fields[12])) / ticks
        return SandboxStats(memory_bytes=int(memory), pids=len(members), cpu_seconds=cpu)

    async def _kill_tree(self) -> None:
        await kill_session(self.proc.pid)

    async def _release(self) -> None:
        self.state.remove()


class ProcessBackend(SandboxBackend):
    name = "process"
    isolates = False

    def __init__(self, state_root: Path | None = None) -> None:
        self.state_root = state_root or Path(tempfile.gettempdir()) / f"hangar-process-{os.getuid()}"
        self._live: set[str] = set()

    async def start(self, spec: SandboxSpec) -> ProcessSandbox:
        log.warning(
            "sandbox %s uses the 'process' backend: NO ISOLATION (host files, network and processes are reachable)",
            spec.sandbox_id,
        )
        state = create_state(self.state_root, spec.sandbox_id)
        self._live.add(spec.sandbox_id)
        try:
            state.rw.mkdir(mode=0o700)
            state.home.mkdir(mode=0o700)
            state.tmp.mkdir(mode=0o700)
            port = free_loopback_port()
            env = agent_environment(spec, port, str(state.home), str(state.tmp))
            channels = Channels.open(state)
            try:
                try:
                    argv = supervisor_argv(spec, str(SUPERVISOR), channels, port)
                    proc = spawn(argv, env, spec.code_dir, state.log, channels.child_fds())
                finally:
                    channels.close_child_ends()
                state.write_record(backend=self.name, pid=proc.pid, start_time=process_start_time(proc.pid), port=port)
                sandbox = ProcessSandbox(spec, state, proc, self._live.discard)
                try:
                    await wait_ready(state, proc, channels)
                except BaseException:
                    await sandbox.stop()
                    raise
            finally:
                channels.close()
        except BaseException:
            self._live.discard(spec.sandbox_id)
            state.remove()
            raise
        return sandbox

    async def cleanup_orphans(self) -> int:
        removed = 0
        for state in list_states(self.state_root):
            if state.sandbox_id in self._live:
                continue
            record = state.read_record()
            pid = record.get("pid")
            if isinstance(pid, int) and same_process(pid, record.get("start_time")):
                await kill_session(pid)
            state.remove()
            removed += 1
        return removed
