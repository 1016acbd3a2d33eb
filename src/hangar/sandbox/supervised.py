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
import subprocess
from abc import abstractmethod
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from pathlib import Path

from hangar.domain.errors import InternalError, RuntimeClientError
from hangar.sandbox.base import ExecEvent, Sandbox, SandboxSpec
from hangar.sandbox.state import StateDir

SUPERVISOR = Path(__file__).with_name("supervisor.py")
FRAME_HEADER = 5
READY_TIMEOUT_S = 30.0
READY_POLL_S = 0.002
STOP_GRACE_S = 2.0
DEFAULT_PATH = "/usr/local/bin:/usr/bin:/bin"
_KINDS = {b"o": "stdout", b"e": "stderr"}


def agent_environment(spec: SandboxSpec, port: int, home: str, tmp: str) -> dict[str, str]:
    """The agent's whole environment: nothing of Hangar's own leaks in; the contract variables always win."""
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


def supervisor_argv(spec: SandboxSpec, supervisor: str, agent_socket: str, control_socket: str, port: int) -> list[str]:
    python = str(spec.env_dir / "bin" / "python")
    return [
        python,
        "-I",
        "-B",
        supervisor,
        "--agent-socket",
        agent_socket,
        "--control-socket",
        control_socket,
        "--port",
        str(port),
        "--",
        *spec.command,
    ]


def spawn(
    argv: Sequence[str], env: Mapping[str, str], cwd: Path, log: Path, pass_fds: Sequence[int] = ()
) -> subprocess.Popen[bytes]:
    """Start ``argv`` as the leader of a new session (stop kills the whole group), output appended to ``log``."""
    with open(log, "ab", buffering=0) as out:
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


async def wait_ready(state: StateDir, proc: subprocess.Popen[bytes], timeout: float = READY_TIMEOUT_S) -> None:
    """Wait until the supervisor's control socket exists (both sockets then listen) or the launch failed."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not state.control_socket.exists():
        if proc.poll() is not None:
            raise InternalError(
                f"sandbox {state.sandbox_id} exited during start ({proc.returncode}): {tail(state.log)}"
            )
        if loop.time() > deadline:
            raise InternalError(f"sandbox {state.sandbox_id} did not start within {timeout:.0f}s: {tail(state.log)}")
        await asyncio.sleep(READY_POLL_S)


def tail(path: Path, limit: int = 2000) -> str:
    try:
        data = path.read_bytes()
    except OSError:
        return ""
    return data[-limit:].decode(errors="replace").strip()


async def wait_exit(proc: subprocess.Popen[bytes], timeout: float) -> bool:
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
            loop.add_reader(pidfd, lambda: done.done() or done.set_result(None))
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


class SupervisedSandbox(Sandbox):
    """A running sandbox; subclasses say how to kill its tree and what to release."""

    def __init__(
        self, spec: SandboxSpec, state: StateDir, proc: subprocess.Popen[bytes], forget: Callable[[str], None]
    ) -> None:
        self.id = spec.sandbox_id
        self.spec = spec
        self.state = state
        self.proc = proc
        self.socket_path = state.agent_socket
        self.log_path = state.log
        self._forget = forget  # tells the backend this sandbox is gone, so cleanup_orphans may take it
        self._stopped = False
        self._stop_lock = asyncio.Lock()

    def alive(self) -> bool:
        return not self._stopped and self.proc.poll() is None

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
                yield ExecEvent(kind=_KINDS[kind], data=payload)  # type: ignore[arg-type]
        finally:
            writer.close()
            with contextlib.suppress(ConnectionError):
                await writer.wait_closed()

    async def stop(self) -> None:
        async with self._stop_lock:
            if self._stopped:
                return
            self._stopped = True
            if self.proc.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    self.proc.send_signal(signal.SIGTERM)
                await wait_exit(self.proc, STOP_GRACE_S)
            await self._kill_tree()
            await wait_exit(self.proc, STOP_GRACE_S)
            await self._release()
            self._forget(self.id)

    @abstractmethod
    async def _kill_tree(self) -> None:
        """SIGKILL everything the sandbox started, including processes that left the supervisor's session."""

    @abstractmethod
    async def _release(self) -> None:
        """Delete the state dir and return whatever the sandbox leased."""
