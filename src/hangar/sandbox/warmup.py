"""What a forked agent's first request would pay on its own, paid once in its warm template instead.

A fork of a warm template starts with everything the agent imported, but an unmodified ``bedrock-agentcore`` app
(and any Starlette app under uvicorn) still imports anyio's asyncio backend, its socket and memory-stream modules and
uvicorn's event-loop module on its first ``/ping`` or ``/invocations``, and builds Starlette's middleware stack on
its first ASGI call. Measured in a fork, that made the real SDK's first ``/ping`` several times slower than
``hangar.sdk``'s, which warms itself. Every fork repeats that work and writes its own copy of the pages it touches;
done here, before the template freezes its heap, it is done once and shared by copy-on-write.

And an idle fork should cost nothing: uvicorn's 0.1 s tick is slowed to one a second while it has connections and
stopped without any, woken at once by a new connection or the exit signal (``quiet_idle_ticks``), which the forks
inherit with the class.

Rules, because this runs in the template of an agent that is then forked: nothing here runs the agent's handler or
its middleware, starts a thread, opens a socket or creates an event loop (the zygote checks after this that it
still has one thread and no sockets). Only modules of packages the agent already imported are imported, so an agent
that does not use anyio does not get it. Anything that fails is skipped: the fork then pays on its first request,
as it did before. Loaded by path by ``zygote.py`` (standard library only, like it), one call: ``warm(config)``.
"""

from __future__ import annotations

import contextlib
import importlib
import os
import sys
from typing import Any

# Imported lazily by anyio (its backend, on the first thread-pool call or task group of a loop) and by Starlette's
# request path: what ``python -X importtime`` shows a forked real-SDK agent importing after it started serving.
FIRST_USE_MODULES = {
    "anyio": (
        "anyio._backends._asyncio",
        "anyio.lowlevel",
        "anyio.to_thread",
        "anyio.from_thread",
        "anyio._core._sockets",
        "anyio._core._streams",
        "anyio._core._tasks",
        "anyio._core._synchronization",
        "anyio.streams.memory",
        "anyio.streams.stapled",
        "anyio.streams.tls",
    ),
    "uvicorn": ("uvicorn.loops.auto", "uvicorn.loops.asyncio", "uvicorn.lifespan.on"),
    "starlette": ("starlette.concurrency",),
}
# Middleware stacks built ahead only when every class in them is one of these packages' (their constructors only
# store arguments); an agent's own middleware is built by Starlette on the first request, as before.
KNOWN_MIDDLEWARE = ("starlette.", "fastapi.", "bedrock_agentcore.", "hangar.sdk.")
MAX_WRAPPERS = 16


def warm(config: Any) -> list[str]:
    """Pay the first-use costs of the app uvicorn ``config`` loaded; returns what was done (for the template log)."""
    done = [f"imported {name}" for name in import_first_use()]
    with contextlib.suppress(Exception):
        config.get_loop_factory()  # uvicorn >= 0.36: imports the loop module (and uvloop) without creating a loop
    with contextlib.suppress(Exception):
        done += build_middleware_stacks(getattr(config, "loaded_app", None))
    with contextlib.suppress(Exception):
        done += quiet_idle_ticks()
    with contextlib.suppress(Exception):
        done += quick_idle_shutdown()
    with contextlib.suppress(Exception):
        done += send_heads_with_bodies(config)
    return done


IDLE_TICK_S = 1.0  # uvicorn's own tick is 0.1 s; its date header is refreshed once a second either way


def quiet_idle_ticks() -> list[str]:
    """Make every fork's uvicorn tick once a second while it has connections and not at all without any.

    An idle uvicorn server wakes every 0.1 s (``Server.main_loop``) to see whether it should exit and to refresh its
    ``date`` header once a second. Measured with 1,000 idle forked sessions on two cores, those wake-ups used 1.7 cores
    (0.17 % of a core each) and made a new session 3.5 times slower; at one a second, 100 idle forks still used 2.5 %
    of a core. Here the loop ticks every ``IDLE_TICK_S`` (each tick counts as ten of uvicorn's, so the date still
    changes every second) while a connection is open, and with none it waits until one is made or the exit signal
    comes: a new connection refreshes the date header at once (before its request is read) and restarts the ticks,
    and a stop is noticed as soon as before. A server with a ``callback_notify`` (it must be called on time) only
    gets the slower tick. Only for the uvicorn whose ``main_loop``/``on_tick``/``handle_exit`` and
    ``server_state.connections`` have the shape this was written against (0.30 and later); anything else is left as
    it is.
    """
    uvicorn = sys.modules.get("uvicorn")
    server_class = getattr(uvicorn, "Server", None)
    if server_class is None or getattr(server_class, "_hangar_quiet", False):
        return []
    if not all(callable(getattr(server_class, name, None)) for name in ("main_loop", "on_tick", "handle_exit")):
        return []
    import asyncio

    original_exit = server_class.handle_exit

    async def main_loop(server: Any) -> None:
        loop = asyncio.get_running_loop()
        sleeps = _wake_on_connect(server, loop)
        counter = 0
        while not await server.on_tick(counter):
            counter = (counter + 10) % 864000
            server._hangar_wake = wake = loop.create_future()
            if sleeps and not server.server_state.connections:
                await wake  # a connection or the exit signal ends it
                continue
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(wake, IDLE_TICK_S)

    def handle_exit(server: Any, sig: int, frame: Any) -> None:
        original_exit(server, sig, frame)
        _wake(server)

    server_class.main_loop = main_loop
    server_class.handle_exit = handle_exit
    server_class._hangar_quiet = True
    return ["uvicorn ticks once a second with connections, never without"]


def _wake(server: Any) -> None:
    """End the main loop's wait (from a signal handler too: through the loop's self-pipe)."""
    wake = getattr(server, "_hangar_wake", None)
    if wake is not None:
        with contextlib.suppress(RuntimeError):
            wake.get_loop().call_soon_threadsafe(lambda: wake.done() or wake.set_result(None))


def _wake_on_connect(server: Any, loop: Any) -> bool:
    """Replace the server's connection set with one whose ``add`` dates the answers and wakes the main loop; False
    (the loop keeps ticking) when this uvicorn is not of the expected shape or must notify on time."""
    state: Any = getattr(server, "server_state", None)
    connections = getattr(state, "connections", None)
    if type(connections) is not set or getattr(server.config, "callback_notify", None) is not None:
        return False

    class WakingSet(set):  # type: ignore[type-arg]
        def add(self, item: Any) -> None:
            super().add(item)
            with contextlib.suppress(Exception):
                _tick_now(server)  # the first answer after a quiet spell carries today's date, not the last tick's
            wake = getattr(server, "_hangar_wake", None)
            if wake is not None and not wake.done():
                wake.set_result(None)  # protocols are made by the loop itself, on its thread

    state.connections = WakingSet(connections)  # made before the main loop: no protocol holds the old set yet
    return True


def _tick_now(server: Any) -> None:
    """Run uvicorn's own tick synchronously (its date refresh): without a ``callback_notify`` it never awaits."""
    tick = server.on_tick(0)
    try:
        tick.send(None)
    except StopIteration:
        return
    tick.close()


SHUTDOWN_PASSES = 64  # loop passes for closed idle connections to be dropped (each close takes one or two)


def quick_idle_shutdown() -> list[str]:
    """Make a fork's uvicorn exit at once on a stop when no request is in flight.

    uvicorn's ``Server.shutdown`` asks every connection to close, then always sleeps 0.1 s before it waits for them:
    with 8 clients each stopping its session before opening the next, that sleep alone held them below 80 new
    sessions a second. With no request in flight (``server_state.tasks`` empty: no HTTP cycle, no WebSocket) its
    connections are idle keep-alives, which ``connection.shutdown()`` closes on the spot, so the same steps run here
    without the sleep: listeners closed, connections shut down and waited for by loop passes (a closed transport is
    dropped on the loop's next pass), then uvicorn's own wait and the app's lifespan shutdown. With a request in
    flight uvicorn's own shutdown runs, grace and all. Only for a uvicorn of the shape this was written against
    (0.29 and later: ``_wait_tasks_to_complete``); anything else is left as it is."""
    uvicorn = sys.modules.get("uvicorn")
    server_class = getattr(uvicorn, "Server", None)
    original = getattr(server_class, "shutdown", None)
    if server_class is None or original is None or getattr(server_class, "_hangar_quick_exit", False):
        return []
    if not callable(getattr(server_class, "_wait_tasks_to_complete", None)):
        return []
    import asyncio
    import inspect

    if not inspect.iscoroutinefunction(original):
        return []

    async def shutdown(server: Any, sockets: Any = None) -> None:
        state: Any = getattr(server, "server_state", None)
        tasks, connections = getattr(state, "tasks", None), getattr(state, "connections", None)
        if tasks or tasks is None or connections is None or not isinstance(getattr(server, "servers", None), list):
            await original(server, sockets)  # a request in flight (or an unknown shape): uvicorn's graceful way
            return
        for listener in server.servers:
            listener.close()
        for sock in sockets or []:
            sock.close()
        for connection in list(connections):
            connection.shutdown()
        for _ in range(SHUTDOWN_PASSES):
            if not connections:
                break
            await asyncio.sleep(0)
        try:
            await asyncio.wait_for(server._wait_tasks_to_complete(), server.config.timeout_graceful_shutdown)
        except TimeoutError:
            for task in list(tasks):  # what uvicorn does past its graceful timeout
                task.cancel()
        if not server.force_exit:
            await server.lifespan.shutdown()

    server_class.shutdown = shutdown
    server_class._hangar_quick_exit = True
    return ["uvicorn exits without its 0.1 s shutdown sleep when no request is in flight"]


# What fill_free_blocks allocated: kept for the template's life (and so in every fork, shared, never written).
_FILLER: list[bytes] = []
MAX_FILLER = 200_000
BYTES_HEADER = 33  # sys.getsizeof(b""): a bytes object of n bytes asks the allocator for 33 + n


def fill_free_blocks() -> int:
    """Fill the free slots of the template's partly used allocator pools, just before the fork; returns how many.

    A fork's new small objects would land in those slots, scattered over the template's pages, and each one written
    copies a whole 4 KiB page into that session. Filled, the fork's objects go to fresh pools of its own, packed
    together (measured: a forked child's private memory after a few requests, 11.85 -> 11.10 MiB; an idle forked
    session's USS in the density suite, three processes, 10.40 -> 10.18 MiB). CPython's pymalloc
    reports its free blocks per size class (``sys._debugmallocstats``, on the C stderr, captured here: the template
    has one thread); a bytes object of the class's size takes each. Any other allocator or format
    (nothing parsed) leaves the heap as it is. Size classes below a bytes object's header are left free."""
    stats = getattr(sys, "_debugmallocstats", None)
    if stats is None:
        return 0
    try:
        report = _c_stderr_of(stats)
    except (OSError, AttributeError, ValueError):  # no memfd_create (an image's older Python), a closed fd 2
        return 0
    filled = 0
    for line in report.splitlines():
        fields = line.split()
        if len(fields) != 5 or not all(field.isdigit() for field in fields):
            continue  # "class size num-pools blocks-in-use avail-blocks" rows only
        size, free = int(fields[1]), int(fields[4])
        if size < BYTES_HEADER or filled + free > MAX_FILLER:
            continue
        _FILLER.extend(bytes(size - BYTES_HEADER) for _ in range(free))
        filled += free
    return filled


def _c_stderr_of(call: Any) -> str:
    """What ``call()`` writes to file descriptor 2 (the C level stderr), captured in a memfd (no size limit, no
    file left behind for the forks' copy of the template's writable tree)."""
    capture = os.memfd_create("hangar-mallocstats", os.MFD_CLOEXEC)
    saved = os.dup(2)
    try:
        os.dup2(capture, 2)
        call()
    finally:
        os.dup2(saved, 2)
        os.close(saved)
    with os.fdopen(capture, "rb") as captured:
        captured.seek(0)
        return captured.read().decode(errors="replace")


def import_first_use() -> list[str]:
    """Import the first-use modules of every package in ``FIRST_USE_MODULES`` that the agent itself imported."""
    imported = []
    for package, modules in FIRST_USE_MODULES.items():
        if package not in sys.modules:
            continue
        for name in modules:
            if name in sys.modules:
                continue
            with contextlib.suppress(Exception):
                importlib.import_module(name)
                imported.append(name)
    return imported


def build_middleware_stacks(app: Any) -> list[str]:
    """Build the lazily-built middleware stack of each Starlette app in uvicorn's wrapper chain (``.app``)."""
    built = []
    for _ in range(MAX_WRAPPERS):
        if app is None:
            break
        build = getattr(type(app), "build_middleware_stack", None)
        if callable(build) and getattr(app, "middleware_stack", False) is None and _known_middleware(app):
            app.middleware_stack = app.build_middleware_stack()
            built.append(f"built the middleware stack of {type(app).__qualname__}")
        app = getattr(app, "app", None)
    return built


def _known_middleware(app: Any) -> bool:
    classes = [getattr(entry, "cls", None) for entry in getattr(app, "user_middleware", [])]
    handlers = getattr(app, "exception_handlers", {})
    return all(
        cls is not None and getattr(cls, "__module__", "").startswith(KNOWN_MIDDLEWARE) for cls in classes
    ) and isinstance(handlers, dict)


_RESPONSE_HEAD = b"HTTP/1.1 "  # how every response head of uvicorn's HTTP protocols (h11 and httptools) begins


def send_heads_with_bodies(config: Any) -> list[str]:
    """Make a fork's uvicorn send an answer's head and its body in one write, as the gateway's does.

    uvicorn writes the status line and headers when the app sends ``http.response.start`` and the body in a second
    write: two system calls and two wake-ups of the gateway, which reads a head it cannot use without the body (the
    gateway then waits for the body, ``AgentResponse.complete_body_soon``). The protocol class of ``config`` (a
    loaded uvicorn Config) is replaced by a subclass whose transport holds a head until the next write (the body,
    or the end of the answer, which both protocols always write) or the loop's next pass, whichever comes first: a
    stream's head never waits for its first chunk. Bytes and their order are unchanged; a WebSocket upgrade gets
    the real transport. Only for a protocol class with uvicorn's ``connection_made``/``handle_websocket_upgrade``.
    """
    base = getattr(config, "http_protocol_class", None)
    if base is None or getattr(base, "_hangar_one_send", False) or not getattr(config, "loaded", False):
        return []
    if not all(callable(getattr(base, name, None)) for name in ("connection_made", "handle_websocket_upgrade")):
        return []

    config.http_protocol_class = one_send_protocol(base)
    return [f"uvicorn's {base.__name__} sends an answer's head with its body"]


def one_send_protocol(base: Any) -> Any:
    """A subclass of uvicorn's HTTP protocol class ``base`` writing through ``HeadHoldingTransport``; a WebSocket
    upgrade gets the real transport (the gateway's protocol is this over httptools)."""

    class OneSendProtocol(base):  # type: ignore[misc]
        _hangar_one_send = True

        def connection_made(self, transport: Any) -> None:
            super().connection_made(HeadHoldingTransport(transport, self.loop))

        def handle_websocket_upgrade(self, *args: Any) -> Any:
            holding: Any = getattr(self, "transport", None)
            if isinstance(holding, HeadHoldingTransport):
                holding.flush()
                self.transport = holding.real
                cycle = getattr(self, "cycle", None)
                if cycle is not None and getattr(cycle, "transport", None) is holding:
                    cycle.transport = holding.real
            return super().handle_websocket_upgrade(*args)

    OneSendProtocol.__name__ = OneSendProtocol.__qualname__ = f"OneSend{base.__name__}"
    return OneSendProtocol


class HeadHoldingTransport:
    """A transport that holds a response head until the next write (or the loop's next pass), then sends both."""

    def __init__(self, transport: Any, loop: Any) -> None:
        self.real = transport
        self._loop = loop
        self._held: bytes | None = None

    def write(self, data: Any) -> None:
        if self._held is not None:
            held, self._held = self._held, None
            self.real.write(held + bytes(data))
        elif bytes(data[: len(_RESPONSE_HEAD)]) == _RESPONSE_HEAD:
            self._held = bytes(data)
            self._loop.call_soon(self.flush)
        else:
            self.real.write(data)

    def writelines(self, data: Any) -> None:
        self.write(b"".join(data))

    def flush(self) -> None:
        """Send a held head now (nothing when none is held)."""
        held, self._held = self._held, None
        if held is not None and not self.real.is_closing():
            self.real.write(held)

    def close(self) -> None:
        self.flush()
        self.real.close()

    def write_eof(self) -> None:
        self.flush()
        self.real.write_eof()

    def abort(self) -> None:
        self._held = None
        self.real.abort()

    def __getattr__(self, name: str) -> Any:
        return getattr(self.real, name)  # is_closing, get_extra_info, pause_reading, set_protocol, ...
