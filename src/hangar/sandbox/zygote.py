"""A warm template ("zygote"): the agent imported and its app built once, then forked into each new session.

Runs inside the template's sandbox under the version's own interpreter, as the template's leased uid without
capabilities (``isolate.py template`` dropped them), so it imports the standard library and the agent only. The
agent's ``main.py`` runs as ``__main__`` exactly as ``python main.py`` would, until it hands its app to uvicorn
(``uvicorn.run`` or ``uvicorn.Server.run``, which every ``hangar.sdk``/``bedrock_agentcore`` app does): there the
template stops instead of serving, checks that it is safe to fork (one thread, nothing listening), freezes its heap
for the garbage collector and tells the host it is ready. It never serves a request.

Agents that serve from async code (``asyncio.run(main())`` awaiting ``uvicorn.Server.serve``, FastMCP's ``mcp.run``
through ``anyio.run``, ``uvloop.run``) fork one step earlier: where ``main.py``'s top level enters its event loop.
Every one of those goes through ``asyncio.Runner``, whose loop is made lazily; the template stops as that loop would
be made (no loop, no selector, no thread exists yet) and each session's agent process resumes right there: its own
loop, its own run of the coroutine the template already built, then the rest of ``main.py`` as ``python`` would run
it. Only the loop entered by ``main.py``'s own top level, inside ``if __name__ == "__main__":`` or as its last
statement, is that point; a loop entered while importing or earlier at the top level (setup) runs in the template.
Such a session is ready once its uvicorn listens, or (its supervisor watching) once anything listens on the agent's
port; if main.py ends before that, the session says so (``NEVER_SERVED``) and the host stops forking the version.

Protocol on ``--control-fd`` (a SOCK_SEQPACKET socket): the template sends JSON messages ``{"event": "ready"}``,
``{"event": "unsafe", "reason": ...}`` (cannot be forked: sessions of this version start cold) or
``{"event": "failed", "reason": ...}``. The host sends one message per new session, ``{"disk_bytes": N}`` with
six fds: the per-session handshake socket, the agent and control listening sockets, the ready pipe, the log file
and the compiled seccomp program. The template forks; the child runs ``isolate.split_from_template`` /
``enter_session`` with the host's help on the handshake socket, becomes pid 1 of its own pid namespace, forks the
agent (uvicorn with the captured app) and is its supervisor, reaping orphans as pid 1. The template answers each
request with ``{"event": "forked"}`` or ``{"event": "fork_failed", "reason": ...}``.

Outbound ports (``--outbound=PORT:PATH``, as the supervisor takes them) are handed to each fork's supervisor. With
``--template-credentials-port=N`` the template answers the container credentials port itself while the agent
imports (botocore fetches credentials as soon as a client is created), with credentials that expired long ago and
``Connection: close`` (``template_credentials.py``); the listener and its thread are gone before the template is
checked and declared ready. A fork's botocore therefore refreshes on first use, from the fork's own supervisor: that
session's own credentials.

Siblings, loaded by path from this file's directory (never on the agent's sys.path): ``isolate.py`` (a fork's
isolation, and the checks that the template is safe to fork), ``supervisor.py`` (with its ``commands.py`` and
``sock_diag.py``), ``loop_entry.py``, ``template_credentials.py`` and ``warmup.py``.

Usage: ``zygote.py --control-fd=N --port=N [--outbound=PORT:PATH...] [--template-credentials-port=N] -- PYTHON
SCRIPT [ARGS...]``
"""

from __future__ import annotations

import asyncio.runners
import atexit
import contextlib
import gc
import importlib.util
import json
import os
import runpy
import socket
import sys
import threading
import traceback
from collections.abc import Iterable
from types import ModuleType
from typing import Any

HERE = os.path.dirname(os.path.abspath(__file__))
MESSAGE_LIMIT = 65536
FDS_PER_FORK = 6
LISTEN_POLL_S = 0.005  # a session forked at a loop entry looks this often for its agent's listener
# A session forked at a loop entry that ended before uvicorn listened (sessions/templates.py looks for this text).
NEVER_SERVED = (
    "the agent's event loop entered at {entry} (its fork point) ended before uvicorn listened: this agent cannot "
    "start by fork"
)


def _patch(owner: object, name: str, value: object) -> None:
    """Replace a library attribute: intercepting uvicorn's and asyncio's entry points is this program's job."""
    setattr(owner, name, value)


def _load(name: str) -> ModuleType:
    """A sibling stdlib-only module by path, once per process (the supervisor's loads share it), without putting
    this directory on the agent's sys.path."""
    key = f"_hangar_{name}"
    if key not in sys.modules:
        spec = importlib.util.spec_from_file_location(key, os.path.join(HERE, f"{name}.py"))
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        sys.modules[key] = module
        spec.loader.exec_module(module)
    return sys.modules[key]


isolate = _load("isolate")
supervisor = _load("supervisor")  # and its siblings, before any fork: an image's fork has none of these files
sock_diag = _load("sock_diag")
loop_entry = _load("loop_entry")


NotForkable = isolate.NotForkable  # the agent cannot be templated; its sessions start cold


class Zygote:
    def __init__(
        self, control: socket.socket, port: int, outbound: list[tuple[int, str]] | None = None, image: bool = False
    ) -> None:
        self.control = control
        self.image = image  # a template of a container image (its forks switch to a root of their own)
        self.port = port
        self.outbound = outbound or []
        self.credentials: Any = None  # template_credentials.TemplateCredentials while the agent imports
        self.config: Any = None
        self.original_server_run: Any = None
        self.original_server_serve: Any = None
        self.original_run: Any = None
        self.original_lazy_init: Any = vars(asyncio.runners.Runner)["_lazy_init"]
        self.script = ""
        self.entry_lines: list[tuple[int, int]] = []  # main.py lines whose loop entry is the fork point
        self.entry: str | None = None  # "main.py:LINE" once the template stopped at a loop entry
        self.in_session = False  # this process is a session's agent (forked at a loop entry), no longer the template
        self.ready_fd: int | None = None  # the session's ready pipe until its uvicorn listens
        self.agent_ready_fd: int | None = None  # set in a session's agent process on its way out of the fork
        self.agent_socket_fd: int | None = None  # the session's agent socket, served by the agent's own uvicorn
        self.tree: list[tuple[str, str, int, bytes]] = []
        self.firsts: set[int] = set()  # sessions' first processes not yet collected (one may wait for the host)

    def report(self, event: str, **fields: object) -> None:
        self.control.send(json.dumps({"event": event, **fields}).encode())

    # --- capturing the app the agent hands to uvicorn

    def install_hooks(self) -> None:
        try:
            import uvicorn
            import uvicorn.main
        except ImportError as exc:
            raise NotForkable(f"uvicorn is not importable in the agent's environment: {exc}") from None
        self.original_server_run = uvicorn.Server.run
        self.original_server_serve = uvicorn.Server.serve
        self.original_run = uvicorn.run
        zygote = self

        def run(app: Any, **kwargs: Any) -> None:
            zygote.serve_forks(uvicorn.Config(app, **kwargs))

        def server_run(server: Any, sockets: Any = None) -> None:
            if sockets:
                raise NotForkable("the agent passes its own sockets to uvicorn")
            zygote.serve_forks(server.config)

        async def server_serve(server: Any, sockets: Any = None) -> None:
            raise NotForkable(loop_entry.serve_in_loop_reason(sys._getframe(), zygote.script))

        def lazy_init(runner: Any) -> None:
            if not zygote.in_session and runner._state.name == "CREATED" and asyncio.events._get_running_loop() is None:
                line = loop_entry.entry_line(sys._getframe(1), zygote.script, zygote.entry_lines)
                if line is not None:
                    zygote.fork_at_loop_entry(line)  # returns in a session's agent process only
            zygote.original_lazy_init(runner)

        _patch(uvicorn, "run", run)
        _patch(uvicorn.main, "run", run)
        _patch(uvicorn.Server, "run", server_run)
        _patch(uvicorn.Server, "serve", server_serve)
        _patch(asyncio.runners.Runner, "_lazy_init", lazy_init)

    def run_agent(self, argv: list[str]) -> None:
        if len(argv) < 2 or not argv[1].endswith(".py"):
            raise NotForkable(f"the entry point is not a Python script run by the environment's python: {argv}")
        script = os.path.abspath(argv[1])
        self.script = script
        with contextlib.suppress(OSError, SyntaxError, ValueError), open(script, "rb") as source:
            self.entry_lines = loop_entry.entry_lines(source.read())  # runpy reports what cannot be read or compiled
        sys.argv = argv[1:]
        sys.path[0] = os.path.dirname(script)  # as ``python main.py`` has it
        runpy.run_path(script, run_name="__main__")
        if self.in_session:
            self.end_session(None)
        raise NotForkable("the agent's main.py returned without handing an app to uvicorn or entering an event loop")

    # --- forking where main.py enters its event loop

    def fork_at_loop_entry(self, line: int) -> None:
        """Stop the template before the event loop exists; returns in each session's agent process, which then
        makes its own loop and runs the agent's coroutine, telling the host once its uvicorn listens."""
        import uvicorn
        import uvicorn.main

        self.entry = f"{os.path.basename(self.script)}:{line}"
        _preload_uvicorn()
        ready_fd = self.fork_point()
        self.in_session, self.ready_fd = True, ready_fd
        _patch(asyncio.runners.Runner, "_lazy_init", self.original_lazy_init)
        _patch(uvicorn, "run", self.original_run)
        _patch(uvicorn.main, "run", self.original_run)
        _patch(uvicorn.Server, "run", self.original_server_run)
        _patch(uvicorn.Server, "serve", self.original_server_serve)
        startup = uvicorn.Server.startup
        zygote = self

        async def startup_and_tell(server: Any, sockets: Any = None) -> None:
            await startup(server, sockets=sockets)
            zygote.tell_ready(bool(server.started))

        _patch(uvicorn.Server, "startup", startup_and_tell)

    def tell_ready(self, started: bool) -> None:
        """The host's ready byte, once: the first uvicorn of the session listens (or could not start)."""
        if self.ready_fd is not None:
            fd, self.ready_fd = self.ready_fd, None
            with contextlib.suppress(OSError):
                os.write(fd, b"1" if started else b"0")
            os.close(fd)

    def end_session(self, exc: BaseException | None) -> None:
        """A forked session's main.py ended (returned or raised): exit as ``python main.py`` would."""
        code = 0
        if isinstance(exc, SystemExit):
            if isinstance(exc.code, int) or exc.code is None:
                code = exc.code or 0
            else:
                print(exc.code, file=sys.stderr)
                code = 1
        elif exc is not None:
            traceback.print_exception(exc)
            code = 1
        if self.ready_fd is not None:
            print(f"hangar: {NEVER_SERVED.format(entry=self.entry)}", file=sys.stderr, flush=True)
            self.tell_ready(False)
            code = code or 1
        with contextlib.suppress(BaseException):
            threading._shutdown()  # type: ignore[attr-defined]  # join non-daemon threads, as the interpreter does
        atexit._run_exitfuncs()
        _exit(code)

    # --- the template loop

    def serve_forks(self, config: Any) -> None:
        if config.reload or (config.workers or 1) > 1:
            raise NotForkable("uvicorn reload or several workers cannot be forked")
        config.load()  # imports the protocol classes and builds the middleware stack once, for every session
        self.config = config
        ready_fd = self.fork_point()
        try:
            self.serve_agent(ready_fd)
        except BaseException:
            traceback.print_exc()
            _exit(1)
        _exit(0)

    def fork_point(self) -> int:
        """Check, freeze, tell the host and fork a session per request: never returns in the template; returns the
        ready pipe's fd in each session's agent process (isolated, stdio on its log), to serve from there."""
        if self.credentials is not None:
            self.credentials.close()
            self.credentials = None
        if os.path.exists(os.path.join(HERE, "warmup.py")):  # bound beside this file (an old install may lack it)
            _load("warmup").warm(self.config)  # the first request's imports and lazy builds, once for all forks
        self.check_safe()
        # What the import left in home and /tmp, once: every session gets a copy, as if its own import wrote it.
        # (An image's forks get a root of their own, built from the image: nothing of the template's is carried.)
        self.tree = [] if self.image else isolate.writable_tree()
        try:
            isolate.libc()  # every fork isolates itself through it: an image's Python must be able to load it
        except OSError as exc:
            raise NotForkable(f"isolate.py cannot load the C library here (glibc's libc.so.6): {exc}") from None
        gc.collect()
        if os.path.exists(os.path.join(HERE, "warmup.py")):
            _load("warmup").fill_free_blocks()  # forks' new objects go to pools of their own, not the template's
        gc.freeze()  # keep the collector from writing to the template's objects in every child (copy-on-write)
        self.report("ready", pid=os.getpid())
        while True:
            message, fds, _, _ = socket.recv_fds(self.control, MESSAGE_LIMIT, FDS_PER_FORK)
            if not message:
                os._exit(0)  # the host retired this template; its sessions live on
            agent: int | None = None
            try:
                if len(fds) != FDS_PER_FORK:
                    raise NotForkable(f"a fork request with {len(fds)} fds")
                self.check_safe(exclude=set(fds))
                agent = self.fork_session(json.loads(message), fds)
                if agent is None:
                    self.report("forked")
            except NotForkable as exc:
                self.report("unsafe", reason=str(exc))
                os._exit(3)
            except Exception as exc:
                self.report("fork_failed", reason=f"{type(exc).__name__}: {exc}")
            finally:
                if agent is None:  # the session's agent process has its own fds by now (those numbers are reused)
                    for fd in fds:
                        with contextlib.suppress(OSError):
                            os.close(fd)
            if agent is not None:
                return agent

    def check_safe(self, exclude: Iterable[int] = ()) -> None:
        """Forks must be independent copies (``isolate.check_forkable`` says what that takes): raises NotForkable."""
        isolate.check_forkable({self.control.fileno(), *exclude}, self.firsts)

    def fork_session(self, request: dict[str, Any], fds: list[int]) -> int | None:
        """Fork the session's first process and answer at once: the host may keep it waiting (prepared ahead of a
        request) while this template serves the next fork. Its exit is collected on a later round. Returns the
        ready pipe's fd in the session's agent process only."""
        self.firsts -= _reap_finished()
        sys.stdout.flush()
        sys.stderr.flush()
        child = os.fork()
        if child == 0:
            return self.become_session(request, fds)
        self.firsts.add(child)
        return None

    # --- in the child: returns in the session's agent process only

    def become_session(self, request: dict[str, Any], fds: list[int]) -> int:
        """The forked child: whatever happens here ends with ``_exit``, never unwinding into the template's frames,
        except in the session's agent process (isolated, its fds its own), which returns its ready pipe's fd."""
        code = 1
        _patch(
            asyncio.runners.Runner, "_lazy_init", self.original_lazy_init
        )  # the session's supervisor runs a loop too
        try:
            code = self._become_session(request, fds)
        except BaseException:
            traceback.print_exc()
        if self.agent_ready_fd is not None:
            return self.agent_ready_fd
        _exit(code)
        return code  # not reached

    def _become_session(self, request: dict[str, Any], fds: list[int]) -> int:
        handshake_fd, agent_fd, control_fd, ready_fd, log_fd, seccomp_fd = fds
        # Read while still the template's uid in its view: the fresh session cannot see either any more.
        files = isolate.open_files({*fds, self.control.fileno()})
        isolate.close_fds(set(fds))
        handshake = socket.socket(fileno=handshake_fd)
        given = isolate.split_from_template(handshake)
        if os.fork() != 0:
            return 0
        program = _read_all(seccomp_fd)
        os.close(seccomp_fd)
        image = request.get("image")
        if image is not None:  # the host sent the session's own root with ``go``
            if len(given) != 1:
                raise OSError(f"an image fork needs its root's fd, got {len(given)} fds")
            uid, gid, workdir = int(image["uid"]), int(image["gid"]), str(image["workdir"])
            disk = int(request["disk_bytes"])
            isolate.enter_image_session(given[0], uid, gid, workdir, disk, program, files, request.get("storage"))
        else:
            for fd in given:
                os.close(fd)
            keep = [str(p) for p in request.get("keep", [])]
            isolate.enter_session(int(request["disk_bytes"]), keep, program, self.tree, files, request.get("storage"))
        isolate.send_creds(handshake, b"G")  # the host checks this process's isolation, then watches it (a pidfd)
        isolate.expect(handshake, b"start")  # isolated ahead of time: the agent resumes only for a real session
        handshake.close()
        null = os.open("/dev/null", os.O_RDONLY)
        os.dup2(null, 0)
        os.close(null)
        os.dup2(log_fd, 1)
        os.dup2(log_fd, 2)
        os.close(log_fd)
        return self.reap_and_serve(agent_fd, control_fd, ready_fd)

    def reap_and_serve(self, agent_fd: int, control_fd: int, ready_fd: int) -> int:
        """pid 1 of the session is its supervisor: it forks the agent, then serves and reaps orphans on its event
        loop (``commands.reap_orphans``); no reaper process of its own (~1.4 MiB per idle session). Its exit ends the
        namespace: the kernel kills whatever is left, as when the reaper above a supervisor ended."""
        # An app captured at ``uvicorn.run`` is served on the session's agent socket by its own uvicorn (beside its
        # TCP port): no relay hop in the supervisor on every request. A loop-entry fork serves however main.py does,
        # so its supervisor relays as in a cold start.
        direct = self.entry is None and hasattr(self.config, "bind_socket")
        agent = os.fork()
        if agent == 0:
            if direct:
                self.agent_socket_fd = agent_fd
            else:
                os.close(agent_fd)
            os.close(control_fd)
            self.agent_ready_fd = ready_fd
            return 0
        supervisor.ask_early()  # the host's SIGTERM reaches pid 1 only through a handler
        if direct:
            os.close(agent_fd)  # only the agent holds it: its exit refuses new connections at once
        import asyncio

        # The agent says "ready" once uvicorn listens (the host's listeners queue connections until the supervisor
        # accepts them), so the first /ping already succeeds; the supervisor's own ready byte goes nowhere. A session
        # forked at a loop entry may serve with something else, or later in main.py: the supervisor also says
        # "ready" once anything listens on the agent's port (whichever comes first; the host reads one byte).
        watch_fd: int | None = ready_fd if self.entry is not None else None
        if watch_fd is None:
            os.close(ready_fd)
        unused = os.open("/dev/null", os.O_WRONLY)
        options = {
            "agent_fd": None if direct else agent_fd,
            "control_fd": control_fd,
            "ready_fd": unused,
            "port": self.port,
            "outbound": self.outbound,
        }
        return int(asyncio.run(_supervise_and_watch(options, agent, self.port, watch_fd)))

    def serve_agent(self, ready_fd: int) -> None:
        """What ``uvicorn.run`` would have done in a cold start, then the interpreter's exit handlers."""
        import asyncio

        import uvicorn

        _patch(uvicorn.Server, "serve", self.original_server_serve)
        server = uvicorn.Server(self.config)
        serve = server.serve

        async def serve_and_tell(sockets: Any = None) -> None:
            if sockets is None and self.agent_socket_fd is not None:  # its own port and the session's socket
                sockets = [self.config.bind_socket(), socket.socket(fileno=self.agent_socket_fd)]
                for sock in sockets:
                    sock.set_inheritable(False)  # as uvicorn's own listener: nothing the agent spawns gets them
            task = asyncio.ensure_future(serve(sockets=sockets))
            while not server.started and not task.done():
                await asyncio.sleep(0.001)
            os.write(ready_fd, b"1" if server.started else b"0")
            os.close(ready_fd)
            await task

        _patch(server, "serve", serve_and_tell)
        self.original_server_run(server)  # uvicorn's own run: its event loop choice, signal handling and shutdown
        atexit._run_exitfuncs()


def _noop_app(scope: Any, receive: Any, send: Any) -> None:
    raise RuntimeError("never served")


def _preload_uvicorn() -> None:
    """Import the protocol classes an async-started uvicorn loads in each session, once, in the template (a
    Config that configures no logging and opens nothing)."""
    import uvicorn

    with contextlib.suppress(Exception):
        uvicorn.Config(_noop_app, log_config=None, lifespan="off").load()


async def _supervise_and_watch(options: dict[str, Any], agent: int, port: int, watch_fd: int | None) -> int:
    """The session's supervisor; for a fork made at a loop entry, beside it the watch for the agent's listener."""
    watcher = asyncio.ensure_future(_tell_when_listening(port, watch_fd)) if watch_fd is not None else None
    try:
        return int(await supervisor.supervise(options, agent))
    finally:
        if watcher is not None:
            watcher.cancel()


async def _tell_when_listening(port: int, ready_fd: int) -> None:
    try:
        while not sock_diag.listening(port):  # sock_diag: reading /proc/net/tcp costs ~18 ms in a fresh netns
            await asyncio.sleep(LISTEN_POLL_S)
        os.write(ready_fd, b"1")
    finally:
        os.close(ready_fd)


def _reap_finished() -> set[int]:
    """Collect first processes that have handed over to their session's pid 1 (they exit right after)."""
    reaped: set[int] = set()
    while True:
        try:
            pid, _ = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return reaped
        if pid == 0:
            return reaped
        reaped.add(pid)


def _read_all(fd: int) -> bytes:
    os.lseek(fd, 0, os.SEEK_SET)
    chunks = []
    while chunk := os.read(fd, 65536):
        chunks.append(chunk)
    return b"".join(chunks)


def _exit(code: int) -> None:
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(OSError, ValueError):
            stream.flush()
    os._exit(code)


def parse(args: list[str]) -> tuple[dict[str, Any], list[str]]:
    if "--" not in args:
        raise SystemExit(f"usage: {__doc__.rsplit('Usage: ', 1)[1].strip()}")
    cut = args.index("--")
    options: dict[str, Any] = {"outbound": []}
    for item in args[:cut]:
        name, _, value = item.removeprefix("--").partition("=")
        if name == "outbound":
            port, _, path = value.partition(":")
            options["outbound"].append((int(port), path))
        else:
            options[name] = int(value)
    return options, args[cut + 1 :]


def main() -> None:
    options, argv = parse(sys.argv[1:])
    control = socket.socket(fileno=options["control-fd"])
    control.set_inheritable(False)
    zygote = Zygote(control, options["port"], options["outbound"], bool(options.get("image")))
    try:
        if "template-credentials-port" in options:
            zygote.credentials = _load("template_credentials").TemplateCredentials(options["template-credentials-port"])
        zygote.install_hooks()
        try:
            zygote.run_agent(argv)
        except BaseException as exc:
            if zygote.in_session:  # a session forked at its loop entry: the agent's own exit, never the template's
                zygote.end_session(exc)
            raise
    except NotForkable as exc:
        zygote.report("unsafe", reason=str(exc))
        _exit(3)
    except BaseException as exc:
        # The agent's own code failed in the template (which has no network): the same import would fail again,
        # so this version's sessions start cold instead of retrying it.
        traceback.print_exc()
        zygote.report("unsafe", reason=f"the agent failed while the template imported it: {type(exc).__name__}: {exc}")
        _exit(1)


if __name__ == "__main__":
    main()
