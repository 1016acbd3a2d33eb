"""In-sandbox supervisor: starts the agent, relays the gateway's Unix socket to the agent's TCP port, runs commands.

It runs under the agent's own interpreter inside the sandbox, so it imports the standard library only and nothing
of hangar. The host creates two listening Unix sockets in a directory the sandbox cannot write (so the sandbox can
never swap a socket for a symlink to somewhere else) and hands them over as inherited file descriptors:

* ``--agent-fd``: every connection is spliced to ``127.0.0.1:PORT`` (the agent) byte for byte, with flow
  control and no buffering of whole messages.
* ``--outbound=PORT:PATH`` (repeatable, optional): listens on ``127.0.0.1:PORT`` inside the sandbox and splices
  every connection to the host's Unix socket ``PATH`` (bound read-only into the sandbox): how the agent reaches
  Hangar's identity endpoint and its credentials. These listeners are bound before the agent is spawned, so a
  connection the agent makes while importing queues instead of failing.
* ``--control-fd``: one request line ``{"command": str, "timeout": float}``; the answer is a stream of frames
  ``kind (1 byte: o, e, x) + length (4 bytes, big endian) + payload``. ``o``/``e`` carry stdout/stderr bytes, the
  final ``x`` carries ``{"exit_code": int | null, "timed_out": bool}``. Or ``{"op": "shell", "cols": N, "rows": N}``:
  an interactive shell on a pty; the caller then sends frames too (``i`` stdin bytes, ``r`` ``{"cols","rows"}``,
  ``k`` a signal number for the foreground process group, ``h`` hang up), gets ``o`` (the pty's output), ``e``
  (why no shell could start) and a final ``x`` ``{"exit_code": int, "signal": int | null}``. Closing the
  connection kills the shell.

The agent is spawned first, before anything heavy is imported, so its own start-up overlaps the supervisor's
(importing asyncio costs tens of milliseconds). Once both sockets serve, the supervisor writes one byte to
``--ready-fd`` (``1``); a cold start's supervisor then writes ``L`` once the agent listens on its port, so the
host's ``/ping`` readiness probe is woken instead of polling with a back-off. It exits with the agent's exit
status when the agent ends, and kills every command it started.

Usage: ``supervisor.py --agent-fd=N --control-fd=N --ready-fd=N --port=N [--outbound=PORT:PATH...] -- AGENT_ARGV...``
"""

from __future__ import annotations

import os
import sys

OPTIONS = ("agent_fd", "control_fd", "ready_fd", "port")


def parse(args: list[str]) -> tuple[dict[str, Any], list[str]]:
    """``--name=N`` options, then ``--`` and the agent's argv; exits with a usage message otherwise."""
    if "--" not in args or args[-1] == "--":
        raise SystemExit(f"usage: {__doc__.rsplit('Usage: ', 1)[1].strip()}")
    cut = args.index("--")
    options: dict[str, Any] = {"outbound": []}
    for item in args[:cut]:
        key, _, value = item.partition("=")
        name = key.removeprefix("--").replace("-", "_")
        port, _, path = value.partition(":")
        if name == "outbound" and port.isdigit() and path.startswith("/"):
            options["outbound"].append((int(port), path))
        elif name not in OPTIONS or not value.isdigit():
            raise SystemExit(f"supervisor: bad option {item!r}")
        else:
            options[name] = int(value)
    if not set(OPTIONS) <= set(options):
        raise SystemExit(f"supervisor: missing {sorted(set(OPTIONS) - set(options))}")
    return options, args[cut + 1 :]


def bind_outbound(options: dict[str, Any]) -> None:
    """Listen on each outbound port (loopback only) before anything of the agent runs. With the C module alone:
    ``import socket`` (enum and friends) would delay the agent's spawn by milliseconds."""
    import _socket

    bound = []
    for port, path in options.get("outbound", []):
        sock = _socket.socket(_socket.AF_INET, _socket.SOCK_STREAM)
        sock.setsockopt(_socket.SOL_SOCKET, _socket.SO_REUSEADDR, 1)
        sock.bind(("127.0.0.1", port))
        sock.listen(128)
        os.set_inheritable(sock.fileno(), False)  # the agent never gets them
        bound.append((sock.detach(), path))
    options["outbound_sockets"] = bound


def spawn_agent(options: dict[str, Any], argv: list[str]) -> int:
    for name in ("agent_fd", "control_fd", "ready_fd"):
        os.set_inheritable(options[name], False)  # the agent never gets the supervisor's sockets
    return os.posix_spawnp(argv[0], argv, os.environ)


if __name__ == "__main__":
    EARLY = parse(sys.argv[1:])
    bind_outbound(EARLY[0])
    EARLY_AGENT = spawn_agent(*EARLY)
    # The supervisor never speaks TLS: keeping asyncio from importing ssl saves loading OpenSSL (~4 MiB RSS).
    sys.modules["ssl"] = None  # type: ignore[assignment]  # None in sys.modules is how an import is blocked

import asyncio  # noqa: E402 (after the early spawn, on purpose)
import contextlib  # noqa: E402
import json  # noqa: E402
import signal  # noqa: E402
import socket  # noqa: E402
import struct  # noqa: E402
from typing import Any  # noqa: E402 (typing and what it imports: ~20 ms before the agent's spawn otherwise)

CHUNK = 65536
HIGH_WATER = 256 * 1024
READ_SIZE = 256 * 1024
_READ_VIEW = memoryview(bytearray(READ_SIZE))  # shared by every relayed connection, see ``_Splice``
FRAME = struct.Struct(">cI")
EXEC_LINE_LIMIT = 1024 * 1024
AGENT_GRACE_S = 1.5  # shorter than the host's grace, so a clean stop ends here first
NETLINK_SOCK_DIAG, SOCK_DIAG_BY_FAMILY, TCP_LISTEN, DUMP_FLAGS = 4, 20, 10, 0x301  # NLM_F_REQUEST | NLM_F_DUMP
NLMSG_ERROR, NLMSG_DONE = 2, 3
NLMSG_HEADER = struct.Struct("=IHHII")  # length, type, flags, seq, pid
DIAG_REQUEST = struct.Struct("=BBBBI")  # inet_diag_req_v2: family, protocol, ext, pad, states; then the socket id
DIAG_SOCKID_SIZE = 48  # sport, dport, src[16], dst[16], interface, cookie[2]: all zero, a dump matches any
PORT = struct.Struct(">H")
LISTEN_POLL_S = (0.002, 0.02)  # how often a cold start's supervisor looks for the agent's listener: first, later
LISTEN_FAST_S = 2.0  # the fast polls' span (a trivial agent listens within a few hundred ms, a heavy one seconds)
LISTEN_WATCH_S = 300.0  # then the watch gives up (the host's probe polls on its own as before)


class _Splice(asyncio.BufferedProtocol):
    """One direction-pair of a relayed connection; each side pauses the other when its write buffer fills.

    Reads land in one buffer shared by every connection (the loop runs one read at a time and each read is copied
    out at once): asyncio's plain ``recv(256 KiB)`` made the C library map and unmap 256 KiB for every read, twice
    the cost of the read itself when an SSE stream brings a few small events at a time.
    """

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.peer: _Splice | None = None
        self.pending: list[bytes] = []
        self.eof = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)  # a stream connection's transport always is one
        self.transport = transport
        transport.set_write_buffer_limits(high=HIGH_WATER)

    def attach(self, peer: _Splice) -> None:
        self.peer = peer
        if self.pending and peer.transport is not None:
            peer.transport.write(b"".join(self.pending))
            self.pending.clear()
        if self.eof:
            peer.forward_eof()
            if peer.eof:
                self.close_both()
        elif self.transport is not None:
            self.transport.resume_reading()

    def get_buffer(self, sizehint: int) -> memoryview:
        return _READ_VIEW

    def buffer_updated(self, nbytes: int) -> None:
        data = bytes(_READ_VIEW[:nbytes])  # a copy: the next read reuses the buffer
        if self.peer is not None and self.peer.transport is not None:
            self.peer.transport.write(data)
        else:
            self.pending.append(data)
            if self.transport is not None:
                self.transport.pause_reading()

    def eof_received(self) -> bool:
        self.eof = True
        if self.peer is not None:
            self.peer.forward_eof()
            if self.peer.eof:  # both directions are done: nothing more can flow
                self.close_both()
        return True  # keep our write side open: the answer may still be flowing

    def close_both(self) -> None:
        for side in (self, self.peer):
            if side is not None and side.transport is not None:
                side.transport.close()

    def forward_eof(self) -> None:
        if self.transport is None or self.transport.is_closing():
            return
        if self.transport.can_write_eof():
            self.transport.write_eof()
        else:
            self.transport.close()

    def pause_writing(self) -> None:
        if self.peer is not None and self.peer.transport is not None:
            self.peer.transport.pause_reading()

    def resume_writing(self) -> None:
        if self.peer is not None and self.peer.transport is not None:
            self.peer.transport.resume_reading()

    def connection_lost(self, exc: Exception | None) -> None:
        if self.peer is not None and self.peer.transport is not None:
            self.peer.transport.close()


class Relay:
    """Accepts gateway connections on the agent socket and splices each to the agent's loopback port."""

    def __init__(self, port: int) -> None:
        self.port = port

    def protocol(self) -> _Splice:
        inbound = _Splice()
        asyncio.get_running_loop().create_task(self._connect(inbound))
        return inbound

    async def _connect(self, inbound: _Splice) -> None:
        loop = asyncio.get_running_loop()
        try:
            _, outbound = await loop.create_connection(_Splice, "127.0.0.1", self.port)
        except OSError:
            # The agent does not listen (yet): the caller sees a closed connection and polls again.
            if inbound.transport is not None:
                inbound.transport.close()
            return
        outbound.peer = inbound
        if inbound.transport is None or inbound.transport.is_closing():
            if outbound.transport is not None:
                outbound.transport.close()
            return
        inbound.attach(outbound)


class Outbound:
    """Accepts the agent's loopback connections to one outbound port and splices each to a host Unix socket."""

    def __init__(self, path: str) -> None:
        self.path = path

    def protocol(self) -> _Splice:
        inbound = _Splice()
        asyncio.get_running_loop().create_task(self._connect(inbound))
        return inbound

    async def _connect(self, inbound: _Splice) -> None:
        loop = asyncio.get_running_loop()
        try:
            _, outbound = await loop.create_unix_connection(_Splice, self.path)
        except OSError:
            if inbound.transport is not None:
                inbound.transport.close()  # the host does not serve it (now): the agent sees a closed connection
            return
        outbound.peer = inbound
        if inbound.transport is None or inbound.transport.is_closing():
            if outbound.transport is not None:
                outbound.transport.close()
            return
        inbound.attach(outbound)


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
            proc = await asyncio.create_subprocess_exec(
                "/bin/sh",
                "-c",
                command,
                stdin=asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE,
                process_group=0,
            )
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
        self.groups.add(proc.pid)
        work = asyncio.ensure_future(
            asyncio.gather(_pump(proc.stdout, b"o", writer), _pump(proc.stderr, b"e", writer), proc.wait())
        )
        # The caller sends nothing after its request: a read that returns means it hung up.
        hangup = asyncio.ensure_future(reader.read(1))
        try:
            waiting: set[asyncio.Future[Any]] = {work, hangup}
            done, _ = await asyncio.wait(waiting, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
            if work in done:
                work.result()
            else:
                _kill_group(proc.pid)
                work.cancel()
                await proc.wait()
                if hangup in done:
                    return  # nobody to tell: the caller went away, and its command went with it
            result = {"exit_code": proc.returncode, "timed_out": work not in done}
            writer.write(_frame(b"x", json.dumps(result).encode()))
            await writer.drain()
        except (ConnectionError, asyncio.CancelledError):
            pass  # the caller went away mid-stream: its command goes too
        finally:
            hangup.cancel()
            work.cancel()
            _kill_group(proc.pid)
            self.groups.discard(proc.pid)
            await _close(writer)

    def kill_all(self) -> None:
        for pgid in list(self.groups):
            _kill_group(pgid)


SHELLS = ("/bin/bash", "/bin/sh")
SHELL_FRAME_LIMIT = 1024 * 1024
SHELL_HANGUP_S = 5.0  # after a hangup, what still runs of the shell's group is killed
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
        exited = asyncio.ensure_future(_wait_pid(self.pid))
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
            elif kind == b"h":  # a terminal hangup: the shell and its foreground job, SIGKILL if they linger
                for pgid in {self.pid, _foreground(self.master)} - {0}:
                    with contextlib.suppress(OSError):
                        os.killpg(pgid, signal.SIGHUP)
                        os.killpg(pgid, signal.SIGCONT)
                asyncio.get_running_loop().call_later(SHELL_HANGUP_S, _kill_group, self.pid)


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


def _listener(fd: int) -> socket.socket:
    sock = socket.socket(fileno=fd)
    sock.set_inheritable(False)  # neither the agent nor an exec'd command gets the listening sockets
    return sock


def _resolve(future: asyncio.Future[None]) -> None:
    """Resolve once: a pidfd stays readable after its process exits, and the reader may fire again first."""
    if not future.done():
        future.set_result(None)


async def _wait_pid(pid: int) -> int:
    """Exit status of our child ``pid``, awaited through a pidfd (no watcher thread); polled where there is none
    (not Linux, or a kernel without pidfd_open such as gVisor's)."""
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


def listening(port: int) -> bool:
    """Something listens on TCP ``port`` (v4 or v6) in this network namespace, asked of the kernel's sock_diag as
    ``ss -ltn`` does: only the listening sockets are walked and the agent sees no probe connection. (Reading
    /proc/net/tcp walks every established-socket bucket of the host: ~18 ms a read here.) OSError where the kernel
    has no sock_diag (gVisor).
    """
    with socket.socket(socket.AF_NETLINK, socket.SOCK_DGRAM, NETLINK_SOCK_DIAG) as sock:
        for family in (socket.AF_INET, socket.AF_INET6):
            request = DIAG_REQUEST.pack(family, socket.IPPROTO_TCP, 0, 0, 1 << TCP_LISTEN) + bytes(DIAG_SOCKID_SIZE)
            sock.send(
                NLMSG_HEADER.pack(NLMSG_HEADER.size + len(request), SOCK_DIAG_BY_FAMILY, DUMP_FLAGS, 0, 0) + request
            )
            if _dump_has_port(sock, port):
                return True
    return False


def _dump_has_port(sock: socket.socket, port: int) -> bool:
    """Read one sock_diag dump to its end; True if a socket in it has ``port`` as its source port."""
    found = False
    while True:
        data = sock.recv(65536)
        offset = 0
        while offset + NLMSG_HEADER.size <= len(data):
            length, kind, _, _, _ = NLMSG_HEADER.unpack_from(data, offset)
            if kind in (NLMSG_DONE, NLMSG_ERROR) or length < NLMSG_HEADER.size:
                return found
            # inet_diag_msg: family, state, timer, retrans (1 byte each), then the socket id: sport first (BE)
            found = found or PORT.unpack_from(data, offset + NLMSG_HEADER.size + 4)[0] == port
            offset += (length + 3) & ~3


async def _say_when_listening(ready_fd: int, port: int) -> None:
    """``L`` on the ready pipe once the agent listens. A host that closed its end (it does not wait for this)
    costs an EPIPE, ignored; the agent exiting first ends the supervisor, and the host reads end of file. Any
    OSError (no sock_diag, a closed pipe) just ends the watch: the host's probe then polls as it always could."""
    loop = asyncio.get_running_loop()
    began = loop.time()
    try:
        while not listening(port):
            waited = loop.time() - began
            if waited > LISTEN_WATCH_S:
                return
            await asyncio.sleep(LISTEN_POLL_S[waited > LISTEN_FAST_S])
        os.write(ready_fd, b"L")
    except OSError:
        pass
    finally:
        os.close(ready_fd)


async def supervise(options: dict[str, Any], agent: int, announce_listening: bool = False) -> int:
    """Serve the relay, the control socket and the outbound ports until the agent ends or we are told to stop;
    ``announce_listening`` (a cold start) keeps the ready pipe open to say when the agent listens."""
    loop = asyncio.get_running_loop()
    relay = Relay(options["port"])
    commands = Commands()
    if "outbound_sockets" not in options:
        bind_outbound(options)  # a forked session: its agent already imported, nothing of it connects before this
    outbound_servers = [
        await loop.create_server(Outbound(path).protocol, sock=socket.socket(fileno=fd))
        for fd, path in options["outbound_sockets"]
    ]
    relay_server = await loop.create_unix_server(relay.protocol, sock=_listener(options["agent_fd"]))
    control_server = await asyncio.start_unix_server(
        commands.handle, sock=_listener(options["control_fd"]), limit=EXEC_LINE_LIMIT
    )
    stopping = asyncio.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stopping.set)
    waiter = asyncio.ensure_future(_wait_pid(agent))
    os.write(options["ready_fd"], b"1")
    announcer = None
    if announce_listening:
        announcer = asyncio.ensure_future(_say_when_listening(options["ready_fd"], options["port"]))
    else:
        os.close(options["ready_fd"])
    stopper = asyncio.ensure_future(stopping.wait())
    await asyncio.wait({waiter, stopper}, return_when=asyncio.FIRST_COMPLETED)
    relay_server.close()
    control_server.close()
    for server in outbound_servers:
        server.close()
    commands.kill_all()
    if not waiter.done():
        with contextlib.suppress(ProcessLookupError):
            os.kill(agent, signal.SIGTERM)
        done, _ = await asyncio.wait({waiter}, timeout=AGENT_GRACE_S)
        if not done:
            with contextlib.suppress(ProcessLookupError):
                os.kill(agent, signal.SIGKILL)
    stopper.cancel()
    if announcer is not None:
        announcer.cancel()
    code = await waiter
    return 128 - code if code < 0 else code


if __name__ == "__main__":
    sys.exit(asyncio.run(supervise(EARLY[0], EARLY_AGENT, announce_listening=True)))
