"""The host side of a sandbox whose agent runs under ``supervisor.py``: launch, exec client, stop template.

Both backends share it; they differ only in how the supervisor is wrapped (nothing, or bwrap inside a cgroup
under its own uid) and in how the whole tree is killed and cleaned up.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import socket
import subprocess
from abc import abstractmethod
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, Protocol

from hangar.domain.errors import InternalError, RuntimeClientError
from hangar.sandbox.base import ExecEvent, Sandbox, SandboxSpec
from hangar.sandbox.shell import ShellEvent, ShellProcess
from hangar.sandbox.state import StateDir

SUPERVISOR = Path(__file__).with_name("supervisor.py")
# The stdlib-only programs that run inside a sandbox: the supervisor, and a warm template's zygote and its isolation.
# Each loads its siblings by path, so every file is bound wherever the program runs (rootfs, image_root, templates).
SUPERVISOR_SIBLINGS = ("commands", "sock_diag")  # beside the supervisor in every sandbox, cold or forked
TEMPLATE_PROGRAMS = ("isolate", "zygote", "warmup", "loop_entry", "template_credentials")  # a warm template's own
INSIDE_PROGRAMS = (
    SUPERVISOR,
    *(SUPERVISOR.with_name(f"{name}.py") for name in (*SUPERVISOR_SIBLINGS, *TEMPLATE_PROGRAMS)),
)
FRAME_HEADER = 5
READY_TIMEOUT_S = 30.0
LISTEN_BACKLOG = 128
STOP_GRACE_S = 2.0
DEFAULT_PATH = "/usr/local/bin:/usr/bin:/bin"
IMAGE_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"  # what container runtimes default to
_KINDS: dict[bytes, Literal["stdout", "stderr"]] = {b"o": "stdout", b"e": "stderr"}


class ProcessHandle(Protocol):
    """What the host needs of a sandbox's first process: a ``Popen`` for cold starts, a pidfd watcher for forks."""

    pid: int
    returncode: int | None

    def poll(self) -> int | None: ...

    def send_signal(self, signum: int) -> None: ...


def agent_environment(spec: SandboxSpec, port: int, home: str, tmp: str) -> dict[str, str]:
    """The agent's whole environment: nothing of Hangar's own leaks in; the contract variables always win. An
    image's agent gets what a container runtime gives (PATH, HOME; ``spec.environment`` holds the image's Env)."""
    if spec.rootfs is not None:
        env = {"PATH": IMAGE_PATH, "HOME": home}
        env.update(spec.environment)
        env.update({"HANGAR_SANDBOX": "1", "DOCKER_CONTAINER": "1", "PORT": str(port)})
        return env
    env = {
        "PATH": f"{spec.env_dir}/bin:{DEFAULT_PATH}",
        "HOME": home,
        "TMPDIR": tmp,
        "LANG": "C.UTF-8",
        "VIRTUAL_ENV": str(spec.env_dir),
        "PYTHONUNBUFFERED": "1",
    }
    env.update(spec.environment)
    env.update({"HANGAR_SANDBOX": "1", "DOCKER_CONTAINER": "1", "PORT": str(port)})
    return env


@dataclass
class Channels:
    """The host's ends of a supervisor: two listening sockets (bound by the host in a directory the sandbox cannot
    write, passed down as fds) and a pipe on which the supervisor says it is ready."""

    agent: socket.socket
    control: socket.socket
    ready_read: int
    ready_write: int

    @classmethod
    def open(cls, state: StateDir) -> Channels:
        listeners = []
        for path in (state.agent_socket, state.control_socket):
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            sock.bind(str(path))
            sock.listen(LISTEN_BACKLOG)
            listeners.append(sock)
        ready_read, ready_write = os.pipe()
        return cls(listeners[0], listeners[1], ready_read, ready_write)

    def child_fds(self) -> tuple[int, int, int]:
        return self.agent.fileno(), self.control.fileno(), self.ready_write

    def take_ready(self) -> int:
        """The ready pipe's read end, now the caller's to close (a cold start keeps it for the ``L`` byte)."""
        fd, self.ready_read = self.ready_read, -1
        return fd

    def close_child_ends(self) -> None:
        """After the spawn only the supervisor holds the listeners; the host connects by path."""
        self.agent.close()
        self.control.close()
        if self.ready_write >= 0:
            os.close(self.ready_write)
            self.ready_write = -1

    def close(self) -> None:
        self.close_child_ends()
        if self.ready_read >= 0:
            os.close(self.ready_read)
            self.ready_read = -1


def outbound_options(spec: SandboxSpec, socket_dir: str) -> list[str]:
    """``--outbound=PORT:PATH`` for the supervisor and the zygote; ``socket_dir`` is where the sandbox sees
    ``spec.outbound.socket_dir``."""
    if spec.outbound is None:
        return []
    return [f"--outbound={port}:{socket_dir}/{name}" for port, name in spec.outbound.ports]


def supervisor_argv(
    spec: SandboxSpec,
    supervisor: str,
    channels: Channels,
    port: int,
    outbound_dir: str | None = None,
    python: Sequence[str] = (),
) -> list[str]:
    """``python``: the interpreter's argv prefix (default: the version's env python; an image sandbox runs the
    host's through its loader, so the supervisor needs nothing of the image). ``-S``: the supervisor imports the
    standard library only, so the site module and the env's .pth files would only delay the agent's spawn."""
    agent_fd, control_fd, ready_fd = channels.child_fds()
    return [
        *(python or (str(spec.env_dir / "bin" / "python"),)),
        "-I",
        "-S",
        "-B",
        supervisor,
        f"--agent-fd={agent_fd}",
        f"--control-fd={control_fd}",
        f"--ready-fd={ready_fd}",
        f"--port={port}",
        *outbound_options(spec, outbound_dir or str(spec.outbound.socket_dir if spec.outbound else "")),
        "--",
        *spec.command,
    ]


def spawn(
    argv: Sequence[str], env: Mapping[str, str], cwd: Path, log: Path, pass_fds: Sequence[int] = ()
) -> subprocess.Popen[bytes]:
    """Start ``argv`` as the leader of a new session (stop kills the whole group), output appended to ``log``."""
    with open(os.open(log, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600), "ab", buffering=0) as out:
        return subprocess.Popen(
            list(argv),
            env=dict(env),
            cwd=cwd,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            pass_fds=tuple(pass_fds),
        )


async def wait_ready(
    state: StateDir, proc: ProcessHandle, channels: Channels, timeout: float = READY_TIMEOUT_S
) -> None:
    """Wait until the supervisor serves both sockets and started the agent, or the launch failed (bounded)."""
    loop = asyncio.get_running_loop()
    said: asyncio.Future[bytes] = loop.create_future()

    def readable() -> None:
        if not said.done():
            said.set_result(os.read(channels.ready_read, 1))

    loop.add_reader(channels.ready_read, readable)
    try:
        ready = await asyncio.wait_for(said, timeout)
    except TimeoutError:
        raise InternalError(
            f"sandbox {state.sandbox_id} did not start within {timeout:.0f}s: {tail(state.log)}"
        ) from None
    finally:
        loop.remove_reader(channels.ready_read)
    if ready != b"1":
        await wait_exit(proc, 1.0)
        raise InternalError(f"sandbox {state.sandbox_id} failed to start ({proc.returncode}): {tail(state.log)}")


def tail(path: Path, limit: int = 2000) -> str:
    try:
        data = path.read_bytes()
    except OSError:
        return ""
    return data[-limit:].decode(errors="replace").strip()


async def wait_exit(proc: ProcessHandle, timeout: float) -> bool:
    """Wait (bounded) for ``proc`` to end, without a thread per child: a pidfd tells the loop when it exits."""
    if proc.poll() is not None:
        return True
    loop = asyncio.get_running_loop()
    try:
        pidfd = os.pidfd_open(proc.pid)
    except (OSError, AttributeError):
        pidfd = -1
    try:
        if pidfd >= 0:
            done = loop.create_future()
            loop.add_reader(pidfd, _resolve, done)
            try:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(done, timeout)
            finally:
                loop.remove_reader(pidfd)
        else:
            deadline = loop.time() + timeout
            while proc.poll() is None and loop.time() < deadline:
                await asyncio.sleep(0.01)
    finally:
        if pidfd >= 0:
            os.close(pidfd)
    return proc.poll() is not None


class SupervisedShell(ShellProcess):
    """The host's end of a supervisor's shell (the ``shell`` op of supervisor.py's control socket)."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer
        self.ended = False

    async def read(self) -> ShellEvent | None:
        if self.ended:
            return None
        try:
            header = await self.reader.readexactly(FRAME_HEADER)
            payload = await self.reader.readexactly(int.from_bytes(header[1:], "big"))
        except (asyncio.IncompleteReadError, ConnectionError):
            self.ended = True
            return None
        kind = header[:1]
        if kind == b"x":
            self.ended = True
            result = json.loads(payload)
            return ShellEvent(kind="exit", exit_code=result["exit_code"], signal=result["signal"])
        return ShellEvent(kind="error" if kind == b"e" else "output", data=payload)

    async def _send(self, kind: bytes, payload: bytes) -> None:
        if self.writer.is_closing():
            return
        self.writer.write(kind + len(payload).to_bytes(4, "big") + payload)
        with contextlib.suppress(ConnectionError):
            await self.writer.drain()

    async def write(self, data: bytes) -> None:
        await self._send(b"i", data)

    async def resize(self, cols: int, rows: int) -> None:
        await self._send(b"r", json.dumps({"cols": cols, "rows": rows}).encode())

    async def signal(self, signum: int) -> None:
        await self._send(b"k", str(signum).encode())

    async def hangup(self) -> None:
        await self._send(b"h", b"")

    async def close(self) -> None:
        self.ended = True
        self.writer.close()
        with contextlib.suppress(ConnectionError):
            await self.writer.wait_closed()


class SupervisedSandbox(Sandbox):
    """A running sandbox; subclasses say how to kill its tree and what to release."""

    def __init__(self, spec: SandboxSpec, state: StateDir, proc: ProcessHandle, forget: Callable[[str], None]) -> None:
        self.id = spec.sandbox_id
        self.spec = spec
        self.state = state
        self.proc = proc
        self.socket_path = state.agent_socket
        self.log_path = state.log
        self._forget = forget  # tells the backend this sandbox is gone, so cleanup_orphans may take it
        self._stopped = False
        self._stop_lock = asyncio.Lock()
        self.dead = asyncio.Event()  # set by ``stop`` once every process is killed, before the release (manager.end)
        self._listening_fd = -1  # the supervisor's ready pipe while it may still say ``L`` (cold starts)
        self.listened = False  # the supervisor said the agent listens (``L``)

    def alive(self) -> bool:
        return not self._stopped and self.proc.poll() is None

    def exit_pid(self) -> int | None:
        return self.proc.pid

    def watch_listening(self, ready_read: int) -> None:
        """Keep the ready pipe after the ready byte: the supervisor writes ``L`` on it once the agent listens."""
        self._listening_fd = ready_read

    async def until_listening(self, timeout: float) -> None:
        """Wake the start-up probe when the supervisor says ``L`` (or its pipe ends), else after ``timeout``."""
        fd = self._listening_fd
        if fd < 0:
            await asyncio.sleep(timeout)
            return
        loop = asyncio.get_running_loop()
        said: asyncio.Future[None] = loop.create_future()
        loop.add_reader(fd, _resolve, said)
        try:
            await asyncio.wait({said}, timeout=timeout)
        finally:
            loop.remove_reader(fd)
        if said.done():  # ``L`` or end of file: either way nothing more will come
            self.listened = os.read(fd, 1) == b"L"
            self._unwatch()

    def _unwatch(self) -> None:
        if self._listening_fd >= 0:
            os.close(self._listening_fd)
            self._listening_fd = -1

    async def exec(self, command: str, timeout: float) -> AsyncIterator[ExecEvent]:
        if not self.alive():
            raise RuntimeClientError(f"sandbox {self.id} is not running")
        try:
            reader, writer = await asyncio.open_unix_connection(str(self.state.control_socket))
        except OSError as exc:
            raise RuntimeClientError(f"sandbox {self.id} does not accept commands: {exc}") from exc
        try:
            writer.write(json.dumps({"command": command, "timeout": timeout}).encode() + b"\n")
            await writer.drain()
            while True:
                try:
                    header = await reader.readexactly(FRAME_HEADER)
                    payload = await reader.readexactly(int.from_bytes(header[1:], "big"))
                except asyncio.IncompleteReadError as exc:
                    raise RuntimeClientError(f"sandbox {self.id} ended during the command") from exc
                kind = header[:1]
                if kind == b"x":
                    result = json.loads(payload)
                    yield ExecEvent(kind="exit", exit_code=result["exit_code"], timed_out=bool(result["timed_out"]))
                    return
                yield ExecEvent(kind=_KINDS[kind], data=payload)
        finally:
            writer.close()
            with contextlib.suppress(ConnectionError):
                await writer.wait_closed()

    async def open_shell(self, cols: int, rows: int) -> ShellProcess:
        if not self.alive():
            raise RuntimeClientError(f"sandbox {self.id} is not running")
        try:
            reader, writer = await asyncio.open_unix_connection(str(self.state.control_socket))
        except OSError as exc:
            raise RuntimeClientError(f"sandbox {self.id} does not accept shells: {exc}") from exc
        writer.write(json.dumps({"op": "shell", "cols": cols, "rows": rows}).encode() + b"\n")
        return SupervisedShell(reader, writer)

    async def stop(self) -> None:
        async with self._stop_lock:
            if self._stopped:
                return
            self._stopped = True
            self._unwatch()
            if self.proc.poll() is None:
                self._ask_to_exit()
                await wait_exit(self.proc, STOP_GRACE_S)
            await self._kill_tree()
            await wait_exit(self.proc, STOP_GRACE_S)
            self.dead.set()
            await self._release()
            self._forget(self.id)

    def _ask_to_exit(self) -> None:
        """SIGTERM the supervisor: it ends its commands, gives the agent a short grace, and exits."""
        with contextlib.suppress(ProcessLookupError):
            self.proc.send_signal(signal.SIGTERM)

    @abstractmethod
    async def _kill_tree(self) -> None:
        """SIGKILL everything the sandbox started, including processes that left the supervisor's session."""

    @abstractmethod
    async def _release(self) -> None:
        """Delete the state dir and return whatever the sandbox leased."""


def _resolve(future: asyncio.Future[None]) -> None:
    """Resolve once: a pidfd stays readable after its process exits, and the reader may fire again first."""
    if not future.done():
        future.set_result(None)
