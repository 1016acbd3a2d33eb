"""The supervisor's control socket: ``exec`` (a ``/bin/sh -c`` command, its output streamed as frames) and the
interactive ``shell`` op (a shell on a pty). The wire protocol is ``supervisor.py``'s docstring.

An in-sandbox program (standard library only, loaded by path beside ``supervisor.py``, never by the agent). It is
separate from the supervisor because it is a job of its own: the supervisor relays bytes and minds the agent's
life, this runs what a caller asks for. The shell is here too, not in a module of its own: it shares the framing,
the process-group kill and the pidfd wait with ``exec``.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import struct
from typing import Any

CHUNK = 65536
HIGH_WATER = 256 * 1024  # a pty's output buffered before the shell is held back
FRAME = struct.Struct(">cI")


class Commands:
    """Runs ``/bin/sh -c`` commands for ``exec`` and streams their output as frames."""

    def __init__(self) -> None:
        self.groups: set[int] = set()

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            request = json.loads(await reader.readline())
            if isinstance(request, dict) and request.get("op") == "shell":
                await Shell(self.groups).serve(request, reader, writer)
                return
            command = str(request["command"])
            timeout = float(request["timeout"])
        except (ValueError, KeyError, TypeError) as exc:
            writer.write(_frame(b"e", f"bad exec request: {exc}\n".encode()))
            writer.write(_frame(b"x", json.dumps({"exit_code": 2, "timed_out": False}).encode()))
            await _close(writer)
            return
        try:
            pid, out_fd, err_fd = _spawn_sh(command)
        except OSError as exc:  # an image without a shell: say so instead of hanging up
            writer.write(_frame(b"e", f"cannot run /bin/sh in this sandbox: {exc.strerror}\n".encode()))
            writer.write(_frame(b"x", json.dumps({"exit_code": 127, "timed_out": False}).encode()))
            await _close(writer)
            return
        except ValueError as exc:  # NUL or a lone surrogate: no argv can carry it; end the stream, never hang
            writer.write(_frame(b"e", f"the command cannot be run: {exc}\n".encode()))
            writer.write(_frame(b"x", json.dumps({"exit_code": 2, "timed_out": False}).encode()))
            await _close(writer)
            return
        self.groups.add(pid)
        exited = asyncio.ensure_future(wait_pid(pid))  # owned since the spawn: the pid-1 reaper leaves it alone
        stdout, stderr = await _read_pipe(out_fd), await _read_pipe(err_fd)
        pumps = (_pump(stdout, b"o", writer), _pump(stderr, b"e", writer))
        work = asyncio.ensure_future(asyncio.gather(*pumps, asyncio.shield(exited)))  # a cancel spares the wait
        # The caller sends nothing after its request: a read that returns means it hung up.
        hangup = asyncio.ensure_future(reader.read(1))
        try:
            waiting: set[asyncio.Future[Any]] = {work, hangup}
            done, _ = await asyncio.wait(waiting, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
            if work in done:
                work.result()
            else:
                _kill_group(pid)
                work.cancel()
                await asyncio.wait({exited})
                if hangup in done:
                    return  # nobody to tell: the caller went away, and its command went with it
            result = {"exit_code": exited.result(), "timed_out": work not in done}
            writer.write(_frame(b"x", json.dumps(result).encode()))
            await writer.drain()
        except (ConnectionError, asyncio.CancelledError):
            pass  # the caller went away mid-stream: its command goes too
        finally:
            hangup.cancel()
            work.cancel()
            _kill_group(pid)
            self.groups.discard(pid)
            await _close(writer)

    def kill_all(self) -> None:
        for pgid in list(self.groups):
            _kill_group(pgid)


SHELLS = ("/bin/bash", "/bin/sh")
SHELL_FRAME_LIMIT = 1024 * 1024
SHELL_HANGUP_S = 5.0  # after a hangup, what still runs of the shell's group is killed
SHELL_HANGUP_REPEAT_S = 0.5  # a hangup is sent again this often until the shell is gone
SHELL_CLOSE_S = 5.0  # how long the caller has to hang up after the exit status
SHELL_DRAIN_S = 0.5  # output still in the pty when the shell exits; a background job holding it open stops here


class Shell:
    """One interactive shell on a pty: the caller's frames in, the pty's output and the exit status out.

    The shell leads a session of its own with the pty as its controlling terminal, so job control works and the
    terminal's own ^C reaches the foreground job; its process group is killed when the caller hangs up."""

    def __init__(self, groups: set[int]) -> None:
        self.groups = groups
        self.pid = 0
        self.master = -1
        self.hanging_up: asyncio.Future[None] | None = None

    async def serve(self, request: dict[str, Any], reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        path = next((p for p in SHELLS if os.access(p, os.X_OK)), None)
        if path is None:
            writer.write(_frame(b"e", b"no shell in this sandbox (neither /bin/bash nor /bin/sh)\n"))
            writer.write(_frame(b"x", json.dumps({"exit_code": 127, "signal": None}).encode()))
            await _close(writer)
            return
        self.master, slave = os.openpty()
        _set_size(slave, request.get("cols"), request.get("rows"))
        self.pid = os.fork()
        if self.pid == 0:  # the child only execs: nothing of the event loop runs here
            _exec_shell(path, slave, str(request.get("term") or "xterm-256color"))
        own(self.pid)
        os.close(slave)
        self.groups.add(self.pid)
        loop = asyncio.get_running_loop()
        output = asyncio.StreamReader(limit=HIGH_WATER)
        await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(output), os.fdopen(self.master, "rb", 0))
        transport, protocol = await loop.connect_write_pipe(
            asyncio.streams.FlowControlMixin, os.fdopen(os.dup(self.master), "wb", 0)
        )
        stdin = asyncio.StreamWriter(transport, protocol, None, loop)
        pump = asyncio.ensure_future(_pump_pty(output, writer))
        inbound = asyncio.ensure_future(self._inbound(reader, stdin))
        exited = asyncio.ensure_future(wait_pid(self.pid))
        try:
            await asyncio.wait({exited, inbound}, return_when=asyncio.FIRST_COMPLETED)
            if exited.done():
                await asyncio.wait({pump}, timeout=SHELL_DRAIN_S)
                status = exited.result()  # negative: killed by that signal
                signum = -status if status < 0 else None
                result = {"exit_code": 128 + signum if signum else status, "signal": signum}
                writer.write(_frame(b"x", json.dumps(result).encode()))
                await writer.drain()
        except (ConnectionError, asyncio.CancelledError):
            pass  # the caller went away: its shell goes too
        finally:
            if self.hanging_up is not None:
                self.hanging_up.cancel()
            _kill_group(self.pid)
            self.groups.discard(self.pid)
            pump.cancel()
            if exited.done() and not inbound.done():
                # The caller has the status: let it hang up first. Closing with its frames unread would reset the
                # connection, and a reset can lose the status still on its way.
                with contextlib.suppress(OSError):
                    writer.write_eof()
                await asyncio.wait({inbound}, timeout=SHELL_CLOSE_S)
            inbound.cancel()
            if not exited.done():
                await asyncio.wait({exited}, timeout=SHELL_DRAIN_S)
            exited.cancel()
            transport.close()
            await _close(writer)

    async def _inbound(self, reader: asyncio.StreamReader, stdin: asyncio.StreamWriter) -> None:
        """The caller's frames until it hangs up (or sends one that is not a frame of this protocol)."""
        while True:
            try:
                header = await reader.readexactly(FRAME.size)
                kind, size = FRAME.unpack(header)
                if size > SHELL_FRAME_LIMIT:
                    return
                payload = await reader.readexactly(size)
            except (asyncio.IncompleteReadError, ConnectionError):
                return
            if kind == b"i":
                stdin.write(payload)
                await stdin.drain()  # a shell that does not read its input holds the caller back, never memory
            elif kind == b"r":
                with contextlib.suppress(ValueError, TypeError, AttributeError):
                    size_request = json.loads(payload)
                    _set_size(self.master, size_request.get("cols"), size_request.get("rows"))
            elif kind == b"k":
                with contextlib.suppress(ValueError, OSError):
                    os.killpg(os.tcgetpgrp(self.master), int(payload))
            elif kind == b"h" and self.hanging_up is None:
                self.hanging_up = asyncio.ensure_future(self._hang_up())

    async def _hang_up(self) -> None:
        """A terminal hangup: SIGHUP to the shell and its foreground job, SIGKILL if they linger.

        The hangup is repeated until the shell is gone: an interactive bash can miss one that lands while its line
        editor is between reads (seen under gVisor on a loaded host), and would then wait for input forever."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + SHELL_HANGUP_S
        while loop.time() < deadline:
            for pgid in {self.pid, _foreground(self.master)} - {0}:
                with contextlib.suppress(OSError):
                    os.killpg(pgid, signal.SIGHUP)
                    os.killpg(pgid, signal.SIGCONT)
            await asyncio.sleep(SHELL_HANGUP_REPEAT_S)
        _kill_group(self.pid)


def _foreground(master: int) -> int:
    try:
        return os.tcgetpgrp(master)
    except OSError:
        return 0  # killpg(0) would be our own group: callers skip it


def _set_size(fd: int, cols: object, rows: object) -> None:
    import fcntl
    import termios

    if isinstance(cols, int) and isinstance(rows, int) and 0 < cols < 65536 and 0 < rows < 65536:
        with contextlib.suppress(OSError):
            fcntl.ioctl(fd, termios.TIOCSWINSZ, struct.pack("HHHH", rows, cols, 0, 0))


def _exec_shell(path: str, slave: int, term: str) -> None:
    """In the forked child: a new session whose controlling terminal is the pty, then the shell; never returns."""
    try:
        import fcntl
        import termios

        os.setsid()
        fcntl.ioctl(slave, termios.TIOCSCTTY, 0)
        for fd in (0, 1, 2):
            os.dup2(slave, fd)
        signal.pthread_sigmask(signal.SIG_SETMASK, set())
        for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGPIPE, signal.SIGCHLD):
            signal.signal(signum, signal.SIG_DFL)
        env = dict(os.environ, TERM=term if term.isprintable() and len(term) < 64 else "xterm-256color")
        os.execve(path, [path, "-i"], env)
    finally:
        os._exit(127)


async def _pump_pty(output: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """The pty's output to the caller; ends when every holder of the pty closed it (EIO on Linux)."""
    with contextlib.suppress(OSError):
        while chunk := await output.read(CHUNK):
            writer.write(_frame(b"o", chunk))
            await writer.drain()


def _frame(kind: bytes, payload: bytes) -> bytes:
    return FRAME.pack(kind, len(payload)) + payload


async def _pump(stream: asyncio.StreamReader | None, kind: bytes, writer: asyncio.StreamWriter) -> None:
    if stream is None:
        return
    while chunk := await stream.read(CHUNK):
        writer.write(_frame(kind, chunk))
        await writer.drain()


def _kill_group(pgid: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, signal.SIGKILL)


async def _close(writer: asyncio.StreamWriter) -> None:
    with contextlib.suppress(ConnectionError):
        writer.close()
        await writer.wait_closed()


def _spawn_sh(command: str) -> tuple[int, int, int]:
    """``/bin/sh -c command`` in a process group of its own, stdin from /dev/null; returns its pid (owned: see
    ``own``) and the read ends of its stdout and stderr. Not asyncio's subprocess: its child watcher waits in a
    thread of its own per command, and would race the pid-1 reaper for the status."""
    out_r, out_w = os.pipe()
    err_r, err_w = os.pipe()
    actions = [(os.POSIX_SPAWN_OPEN, 0, os.devnull, os.O_RDONLY, 0), (os.POSIX_SPAWN_DUP2, out_w, 1)]
    actions.append((os.POSIX_SPAWN_DUP2, err_w, 2))
    actions += [(os.POSIX_SPAWN_CLOSE, fd) for fd in _inheritable_fds()]  # as Popen's close_fds
    try:
        pid = os.posix_spawn(
            "/bin/sh",
            ["/bin/sh", "-c", command],
            os.environ,
            file_actions=actions,
            setpgroup=0,
            setsigdef=(signal.SIGPIPE, signal.SIGXFSZ),  # Python ignores these; a shell's commands must not
            setsigmask=(),
        )
    except BaseException:
        os.close(out_r)
        os.close(err_r)
        raise
    finally:
        os.close(out_w)
        os.close(err_w)
    own(pid)
    return pid, out_r, err_r


def _inheritable_fds() -> list[int]:
    found = []
    for name in os.listdir("/proc/self/fd"):
        with contextlib.suppress(OSError, ValueError):
            if int(name) > 2 and os.get_inheritable(int(name)):
                found.append(int(name))
    return found


async def _read_pipe(fd: int) -> asyncio.StreamReader:
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader(limit=CHUNK, loop=loop)
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader, loop=loop), os.fdopen(fd, "rb", 0))
    return reader


# --- pid 1: a forked session's supervisor is its pid namespace's init, and reaps orphans itself (no reaper process)

_OWNED: set[int] = set()  # children a waiter of ours collects (``wait_pid``); the reaper never touches them
_REAPING = False


def own(pid: int) -> None:
    """Called at once after every spawn, before the loop runs anything else: a child that exits before its
    ``wait_pid`` starts must keep its status for it (a plain reaper would steal it: the command reports 255)."""
    _OWNED.add(pid)


def reap_orphans() -> None:
    """As pid 1: collect every child nobody waits for (orphans the kernel hands to us), on each SIGCHLD."""
    global _REAPING
    _REAPING = True
    asyncio.get_running_loop().add_signal_handler(signal.SIGCHLD, sweep)
    sweep()


def sweep() -> None:
    """Reap zombies that are not owned, peeking first (``WNOWAIT``) so an owned child's status stays for its
    waiter. An owned zombie hides those behind it until its waiter collects it: ``wait_pid`` sweeps again then."""
    while _REAPING:
        try:
            found = os.waitid(os.P_ALL, 0, os.WEXITED | os.WNOHANG | os.WNOWAIT)
        except ChildProcessError:
            return
        if found is None or found.si_pid in _OWNED:
            return
        with contextlib.suppress(ChildProcessError):
            os.waitpid(found.si_pid, os.WNOHANG)


def _resolve(future: asyncio.Future[None]) -> None:
    """Resolve once: a pidfd stays readable after its process exits, and the reader may fire again first."""
    if not future.done():
        future.set_result(None)


async def wait_pid(pid: int) -> int:
    """Exit status of our child ``pid``, awaited through a pidfd (no watcher thread); polled where there is none
    (not Linux, or a kernel without pidfd_open such as gVisor's). Owns ``pid`` until it is collected; cancelled
    first, it leaves the pid to the reaper."""
    own(pid)
    try:
        return await _wait_pid(pid)
    finally:
        _OWNED.discard(pid)
        sweep()


async def _wait_pid(pid: int) -> int:
    try:
        pidfd = os.pidfd_open(pid)
    except (AttributeError, OSError):
        while (status := os.waitpid(pid, os.WNOHANG))[0] == 0:
            await asyncio.sleep(0.05)
        return os.waitstatus_to_exitcode(status[1])
    loop = asyncio.get_running_loop()
    exited = loop.create_future()
    loop.add_reader(pidfd, _resolve, exited)
    try:
        await exited
    finally:
        loop.remove_reader(pidfd)
        os.close(pidfd)
    return os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1])
