"""In-sandbox supervisor: starts the agent, relays the gateway's Unix socket to the agent's TCP port, runs commands.

It runs under the agent's own interpreter inside the sandbox, so it imports the standard library only and nothing
of hangar. The host creates two listening Unix sockets in a directory the sandbox cannot write (so the sandbox can
never swap a socket for a symlink to somewhere else) and hands them over as inherited file descriptors:

* ``--agent-fd``: every connection is spliced to ``127.0.0.1:PORT`` (the agent) byte for byte, with flow
  control and no buffering of whole messages. (A session forked from a template at ``uvicorn.run`` has its agent
  serve this socket itself, one hop less per request: ``zygote.py`` then passes ``agent_fd`` None.)
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
  connection kills the shell. Both ops live in ``commands.py``.

The agent is spawned first, before anything heavy is imported, so its own start-up overlaps the supervisor's
(importing asyncio costs tens of milliseconds). Once both sockets serve, the supervisor writes one byte to
``--ready-fd`` (``1``); a cold start's supervisor then writes ``L`` once the agent listens on its port, so the
host's ``/ping`` readiness probe is woken instead of polling with a back-off. It exits with the agent's exit
status when the agent ends, and kills every command it started. Its siblings (``commands.py``, ``sock_diag.py``)
are loaded by path from its own directory, so they are bound beside it wherever it is (``supervised.INSIDE_PROGRAMS``).

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
import importlib.util  # noqa: E402
import signal  # noqa: E402
import socket  # noqa: E402
from types import ModuleType  # noqa: E402
from typing import Any  # noqa: E402 (typing and what it imports: ~20 ms before the agent's spawn otherwise)

HIGH_WATER = 256 * 1024
READ_SIZE = 256 * 1024
_READ_VIEW = memoryview(bytearray(READ_SIZE))  # shared by every relayed connection, see ``_Splice``
EXEC_LINE_LIMIT = 1024 * 1024
AGENT_GRACE_S = 1.5  # shorter than the host's grace, so a clean stop ends here first
LISTEN_POLL_S = (0.002, 0.02)  # how often a cold start's supervisor looks for the agent's listener: first, later
LISTEN_FAST_S = 2.0  # the fast polls' span (a trivial agent listens within a few hundred ms, a heavy one seconds)
LISTEN_WATCH_S = 300.0  # then the watch gives up (the host's probe polls on its own as before)
HERE = os.path.dirname(os.path.abspath(__file__))
STOP_ASKED: list[int] = []  # signals a forked session's pid 1 got before its loop's handlers (``ask_early``)


def ask_early() -> None:
    """A forked session's pid 1, between forking the agent and its loop: remember SIGTERM/SIGINT (as pid 1, a signal
    without a handler never arrives) so ``supervise`` stops at once."""
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda number, frame: STOP_ASKED.append(number))


def _load(name: str) -> ModuleType:
    """A sibling in-sandbox program by path, once per process (the zygote's loads share it): ``-I`` keeps this
    directory off sys.path, and in a template the agent's sys.path must not get it either."""
    key = f"_hangar_{name}"
    if key not in sys.modules:
        spec = importlib.util.spec_from_file_location(key, os.path.join(HERE, f"{name}.py"))
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        sys.modules[key] = module
        spec.loader.exec_module(module)
    return sys.modules[key]


# Loaded now, not on first use: an image's fork runs this supervisor in a root that has none of these files.
commands = _load("commands")  # the control socket's ops: exec and the interactive shell
sock_diag = _load("sock_diag")  # "does anything listen on this port?"


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


def _listener(fd: int) -> socket.socket:
    sock = socket.socket(fileno=fd)
    sock.set_inheritable(False)  # neither the agent nor an exec'd command gets the listening sockets
    return sock


async def _say_when_listening(ready_fd: int, port: int) -> None:
    """``L`` on the ready pipe once the agent listens. A host that closed its end (it does not wait for this)
    costs an EPIPE, ignored; the agent exiting first ends the supervisor, and the host reads end of file. Any
    OSError (no sock_diag, a closed pipe) just ends the watch: the host's probe then polls as it always could."""
    loop = asyncio.get_running_loop()
    began = loop.time()
    try:
        while not sock_diag.listening(port):
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
    control = commands.Commands()
    if "outbound_sockets" not in options:
        bind_outbound(options)  # a forked session: its agent already imported, nothing of it connects before this
    outbound_servers = [
        await loop.create_server(Outbound(path).protocol, sock=socket.socket(fileno=fd))
        for fd, path in options["outbound_sockets"]
    ]
    relay_server = None  # a forked session's agent serves its socket itself (zygote.py): nothing to relay
    if options["agent_fd"] is not None:
        relay_server = await loop.create_unix_server(relay.protocol, sock=_listener(options["agent_fd"]))
    control_server = await asyncio.start_unix_server(
        control.handle, sock=_listener(options["control_fd"]), limit=EXEC_LINE_LIMIT
    )
    stopping = asyncio.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stopping.set)  # as pid 1 too: a handler is what lets the host's signal in
    if STOP_ASKED:
        stopping.set()
    commands.own(agent)  # before the first sweep: an agent that already ended keeps its status for the waiter
    waiter = asyncio.ensure_future(commands.wait_pid(agent))
    if os.getpid() == 1:  # a forked session: no reaper process above us, the orphans are ours (``commands``)
        commands.reap_orphans()
    os.write(options["ready_fd"], b"1")
    announcer = None
    if announce_listening:
        announcer = asyncio.ensure_future(_say_when_listening(options["ready_fd"], options["port"]))
    else:
        os.close(options["ready_fd"])
    stopper = asyncio.ensure_future(stopping.wait())
    await asyncio.wait({waiter, stopper}, return_when=asyncio.FIRST_COMPLETED)
    if relay_server is not None:
        relay_server.close()
    control_server.close()
    for server in outbound_servers:
        server.close()
    control.kill_all()
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
    code: int = await waiter
    return 128 - code if code < 0 else code


if __name__ == "__main__":
    sys.exit(asyncio.run(supervise(EARLY[0], EARLY_AGENT, announce_listening=True)))
