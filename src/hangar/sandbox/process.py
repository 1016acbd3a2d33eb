"""The ``process`` backend: the agent runs as a plain host process. It does NOT isolate anything.

It exists for development machines without namespaces (only when asked for: ``--sandbox process``), and as the
portable double of ``namespace``: same supervisor, same Unix-socket relay, same state layout. An agent can read the
host's files, reach every host port and see every process. Hangar logs a WARNING whenever this backend starts.

Ports: the AgentCore contract says the agent listens on its protocol's port (8080, 8000, 9000), and unmodified
agents do (the ``bedrock-agentcore`` SDK binds 0.0.0.0:8080 whatever ``PORT`` says). On one host network only one
process can, so a session gets its contract port when no other session of this backend holds it and the host has it
free; otherwise it gets a free loopback port in ``PORT``. An agent that honours ``PORT`` runs either way; one that
binds the contract port anyway dies with "address already in use", and the caller gets a clear
ServiceQuotaExceededException (one session per contract port at a time) instead of an agent that never answers.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import socket
import tempfile
from collections.abc import Callable
from pathlib import Path

from hangar.domain.errors import RuntimeClientError, ServiceQuotaExceededError
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
    tail,
    wait_ready,
)

log = logging.getLogger(__name__)
KILL_ROUNDS = 200
KILL_PAUSE_S = 0.005
LISTEN_POLL_S = 0.02
TCP_LISTEN = "0A"
ADDRESS_IN_USE = ("address already in use", "errno 98")


def free_loopback_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def port_is_free(port: int) -> bool:
    """Could an agent bind ``0.0.0.0:port`` now (as uvicorn does, with SO_REUSEADDR)?"""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("0.0.0.0", port))  # a probe, closed at once
        except OSError:
            return False
    return True


def listening(port: int) -> bool | None:
    """Does anything on this host listen on TCP ``port`` (from /proc/net); None where /proc/net is missing."""
    found_table = False
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        found_table = True
        for line in lines:
            fields = line.split()
            if len(fields) > 3 and fields[3] == TCP_LISTEN and int(fields[1].rsplit(":", 1)[1], 16) == port:
                return True
    return False if found_table else None


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

    contract_port_lease: Callable[[], None] | None = None  # set by the backend when the agent has its contract port

    async def _release(self) -> None:
        self.state.remove()
        if self.contract_port_lease is not None:
            self.contract_port_lease()


class ProcessBackend(SandboxBackend):
    name = "process"
    isolates = False

    def __init__(self, state_root: Path | None = None, start_timeout_s: float = 60.0) -> None:
        self.state_root = state_root or Path(tempfile.gettempdir()) / f"hangar-process-{os.getuid()}"
        self.start_timeout_s = start_timeout_s
        self._live: set[str] = set()
        self._contract_ports: dict[int, str] = {}  # contract port -> the sandbox whose agent has it

    def _lease_contract_port(self, spec: SandboxSpec) -> bool:
        port = spec.agent_port
        if port in self._contract_ports or not port_is_free(port):
            return False
        self._contract_ports[port] = spec.sandbox_id
        return True

    def _return_contract_port(self, spec: SandboxSpec) -> None:
        if self._contract_ports.get(spec.agent_port) == spec.sandbox_id:
            del self._contract_ports[spec.agent_port]

    async def start(self, spec: SandboxSpec) -> ProcessSandbox:
        if spec.rootfs is not None:
            raise RuntimeClientError(
                "Sessions of container images need an isolating sandbox backend (namespace): the process backend "
                "cannot give a session the image's root filesystem"
            )
        log.warning(
            "sandbox %s uses the 'process' backend: NO ISOLATION (host files, network and processes are reachable)",
            spec.sandbox_id,
        )
        state = create_state(self.state_root, spec.sandbox_id)
        self._live.add(spec.sandbox_id)
        leased = self._lease_contract_port(spec)
        try:
            state.rw.mkdir(mode=0o700)
            state.home.mkdir(mode=0o700)
            state.tmp.mkdir(mode=0o700)
            port = spec.agent_port if leased else free_loopback_port()
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
                if leased:
                    sandbox.contract_port_lease = lambda: self._return_contract_port(spec)
                try:
                    await wait_ready(state, proc, channels)
                    if not leased:
                        await self._check_bound_where_told(sandbox, spec, port)
                except BaseException:
                    await sandbox.stop()
                    raise
            finally:
                channels.close()
        except BaseException:
            self._live.discard(spec.sandbox_id)
            self._return_contract_port(spec)
            state.remove()
            raise
        return sandbox

    async def _check_bound_where_told(self, sandbox: ProcessSandbox, spec: SandboxSpec, port: int) -> None:
        """Without its contract port, wait (bounded by the start timeout) until the agent listens on ``PORT`` or
        ends; one that ended on "address already in use" bound the contract port regardless of ``PORT``."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.start_timeout_s
        while loop.time() < deadline:
            if not sandbox.alive():
                log_tail = tail(sandbox.state.log).lower()
                if any(marker in log_tail for marker in ADDRESS_IN_USE):
                    raise ServiceQuotaExceededError(
                        f"The process backend runs one session per contract port at a time: port {spec.agent_port} "
                        "is held by another session on this host and this agent binds it whatever PORT says. "
                        "Stop the other session (StopRuntimeSession), or install bubblewrap for isolated sessions "
                        "(apt-get install -y bubblewrap; then start hangar serve without --sandbox process)."
                    )
                return  # ended for another reason: the session manager reports it
            if listening(port) is not False:
                return
            await asyncio.sleep(LISTEN_POLL_S)

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
