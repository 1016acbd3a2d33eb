"""A warm template ("zygote"): the agent imported and its app built once, then forked into each new session.

Runs inside the template's sandbox under the version's own interpreter, as the template's leased uid without
capabilities (``isolate.py template`` dropped them), so it imports the standard library and the agent only. The
agent's ``main.py`` runs as ``__main__`` exactly as ``python main.py`` would, until it hands its app to uvicorn
(``uvicorn.run`` or ``uvicorn.Server.run``, which every ``hangar.sdk``/``bedrock_agentcore`` app does): there the
template stops instead of serving, checks that it is safe to fork (one thread, nothing listening), freezes its heap
for the garbage collector and tells the host it is ready. It never serves a request.

Protocol on ``--control-fd`` (a SOCK_SEQPACKET socket): the template sends JSON messages ``{"event": "ready"}``,
``{"event": "unsafe", "reason": ...}`` (cannot be forked: sessions of this version start cold) or
``{"event": "failed", "reason": ...}``. The host sends one message per new session, ``{"disk_bytes": N}`` with
six fds: the per-session handshake socket, the agent and control listening sockets, the ready pipe, the log file
and the compiled seccomp program. The template forks; the child runs ``isolate.split_from_template`` /
``enter_session`` with the host's help on the handshake socket, becomes pid 1 (a reaper) of its own pid namespace,
starts the unchanged in-sandbox supervisor and finally runs uvicorn with the captured app. The template answers
each request with ``{"event": "forked"}`` or ``{"event": "fork_failed", "reason": ...}``.

Outbound ports (``--outbound=PORT:PATH``, as the supervisor takes them) are handed to each fork's supervisor. With
``--template-credentials-port=N`` the template answers the container credentials port itself while the agent
imports (botocore fetches credentials as soon as a client is created), with credentials that expired long ago and
``Connection: close``; the listener and its thread are gone before the template is checked and declared ready. A
fork's botocore therefore refreshes on first use, from the fork's own supervisor: that session's own credentials.

Usage: ``zygote.py --control-fd=N --port=N [--outbound=PORT:PATH...] [--template-credentials-port=N] -- PYTHON
SCRIPT [ARGS...]``
"""

from __future__ import annotations

import atexit
import contextlib
import gc
import importlib.util
import json
import os
import runpy
import select
import signal
import socket
import sys
import threading
import time
import traceback
from collections.abc import Iterable
from types import ModuleType
from typing import Any

HERE = os.path.dirname(os.path.abspath(__file__))
ITIMERS = (("alarm", signal.ITIMER_REAL), ("virtual", signal.ITIMER_VIRTUAL), ("profiling", signal.ITIMER_PROF))
MESSAGE_LIMIT = 65536
FDS_PER_FORK = 6


def _load(name: str) -> ModuleType:
    """A sibling stdlib-only module by path, without putting this directory on the agent's sys.path."""
    spec = importlib.util.spec_from_file_location(f"_hangar_{name}", os.path.join(HERE, f"{name}.py"))
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


isolate = _load("isolate")
supervisor = _load("supervisor")


NotForkable = isolate.NotForkable  # the agent cannot be templated; its sessions start cold


def thread_count() -> int:
    """Threads of this process as the kernel sees them (native threads included, not only Python's)."""
    return len(os.listdir("/proc/self/task"))


def shared_writable_mappings() -> list[str]:
    """Writable MAP_SHARED regions of this process (``rw-s`` in /proc/self/maps), by what they map."""
    found = []
    with open("/proc/self/maps") as maps:
        for line in maps:
            fields = line.split(maxsplit=5)
            if len(fields) >= 2 and fields[1].startswith("rw") and fields[1][3] == "s":
                found.append(fields[5].strip() if len(fields) == 6 else "anonymous")
    return found


EXPIRED_CREDENTIALS = json.dumps(
    {
        "AccessKeyId": "ASIAHANGARTEMPLATE00",
        "SecretAccessKey": "template-credentials-expired-refresh-in-the-session",
        "Token": "template",
        "Expiration": "2000-01-01T00:00:00Z",
    }
).encode()


class TemplateCredentials:
    """The credentials port while the template imports: every request gets the expired template credentials."""

    def __init__(self, port: int) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", port))
        self.sock.listen(16)
        self.wake_read, self.wake_write = os.pipe()  # close() wakes the thread at once instead of a poll interval
        self.thread = threading.Thread(target=self.serve, name="hangar-template-credentials", daemon=True)
        self.thread.start()

    def serve(self) -> None:
        while True:
            ready, _, _ = select.select([self.sock, self.wake_read], [], [])
            if self.wake_read in ready:
                return
            with contextlib.suppress(OSError):
                conn, _ = self.sock.accept()
                with conn:
                    conn.settimeout(5)
                    request = b""
                    while b"\r\n\r\n" not in request and len(request) < 65536:
                        chunk = conn.recv(4096)
                        if not chunk:
                            break
                        request += chunk
                    head = (
                        "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
                        f"Content-Length: {len(EXPIRED_CREDENTIALS)}\r\nConnection: close\r\n\r\n"
                    )
                    conn.sendall(head.encode() + EXPIRED_CREDENTIALS)

    def close(self) -> None:
        """Stop, close the listener and wait until the kernel has no thread of it left (the fork checks count)."""
        os.write(self.wake_write, b"x")
        self.thread.join()
        self.sock.close()
        os.close(self.wake_read)
        os.close(self.wake_write)
        for _ in range(1000):
            if thread_count() == 1:
                return
            time.sleep(0.001)


class Zygote:
    def __init__(
        self, control: socket.socket, port: int, outbound: list[tuple[int, str]] | None = None, image: bool = False
    ) -> None:
        self.control = control
        self.image = image  # a template of a container image (its forks switch to a root of their own)
        self.port = port
        self.outbound = outbound or []
        self.credentials: TemplateCredentials | None = None
        self.config: Any = None
        self.original_server_run: Any = None
        self.original_server_serve: Any = None
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
        zygote = self

        def run(app: Any, **kwargs: Any) -> None:
            zygote.serve_forks(uvicorn.Config(app, **kwargs))

        def server_run(server: Any, sockets: Any = None) -> None:
            if sockets:
                raise NotForkable("the agent passes its own sockets to uvicorn")
            zygote.serve_forks(server.config)

        async def server_serve(server: Any, sockets: Any = None) -> None:
            raise NotForkable("the agent starts uvicorn from async code (Server.serve): nothing to fork before it")

        uvicorn.run = run
        uvicorn.main.run = run
        uvicorn.Server.run = server_run
        uvicorn.Server.serve = server_serve

    def run_agent(self, argv: list[str]) -> None:
        if len(argv) < 2 or not argv[1].endswith(".py"):
            raise NotForkable(f"the entry point is not a Python script run by the environment's python: {argv}")
        script = os.path.abspath(argv[1])
        sys.argv = argv[1:]
        sys.path[0] = os.path.dirname(script)  # as ``python main.py`` has it
        runpy.run_path(script, run_name="__main__")
        raise NotForkable("the agent's main.py returned without handing an app to uvicorn")

    # --- the template loop

    def serve_forks(self, config: Any) -> None:
        if config.reload or (config.workers or 1) > 1:
            raise NotForkable("uvicorn reload or several workers cannot be forked")
        config.load()  # imports the protocol classes and builds the middleware stack once, for every session
        self.config = config
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
        gc.freeze()  # keep the collector from writing to the template's objects in every child (copy-on-write)
        self.report("ready", pid=os.getpid())
        while True:
            message, fds, _, _ = socket.recv_fds(self.control, MESSAGE_LIMIT, FDS_PER_FORK)
            if not message:
                os._exit(0)  # the host retired this template; its sessions live on
            try:
                if len(fds) != FDS_PER_FORK:
                    raise NotForkable(f"a fork request with {len(fds)} fds")
                self.check_safe(exclude=set(fds))
                self.fork_session(json.loads(message), fds)
                self.report("forked")
            except NotForkable as exc:
                self.report("unsafe", reason=str(exc))
                os._exit(3)
            except Exception as exc:
                self.report("fork_failed", reason=f"{type(exc).__name__}: {exc}")
            finally:
                for fd in fds:
                    with contextlib.suppress(OSError):
                        os.close(fd)

    def check_safe(self, exclude: Iterable[int] = ()) -> None:
        """Forks must be independent copies: no threads (a fork keeps only the calling one, mid-state), and no
        shared writable memory (a MAP_SHARED mapping made at import would be one region in every session)."""
        threads = thread_count()
        if threads != 1 or threading.active_count() != 1:
            names = ", ".join(t.name for t in threading.enumerate() if t is not threading.main_thread())
            raise NotForkable(f"the template runs {threads} threads ({names or 'native'}): a fork would lose them")
        shared = shared_writable_mappings()
        if shared:
            raise NotForkable(
                f"the template holds shared writable memory ({', '.join(shared[:3])}): forks would share it"
            )
        isolate.open_files({self.control.fileno(), *exclude})  # raises for anything a session could not reopen
        others = set(_children()) - self.firsts
        if others:
            raise NotForkable(f"the agent started processes at import ({len(others)}): forks would not have them")
        # Nothing of the agent may run in the template after import: a timer would run its signal handler here.
        armed = [name for name, which in ITIMERS if signal.getitimer(which) != (0.0, 0.0)]
        if armed or _posix_timers():
            raise NotForkable(f"the agent armed timers at import ({', '.join(armed) or 'POSIX timers'})")

    def fork_session(self, request: dict[str, Any], fds: list[int]) -> None:
        """Fork the session's first process and answer at once: the host may keep it waiting (prepared ahead of a
        request) while this template serves the next fork. Its exit is collected on a later round."""
        self.firsts -= _reap_finished()
        sys.stdout.flush()
        sys.stderr.flush()
        child = os.fork()
        if child == 0:
            self.become_session(request, fds)
        self.firsts.add(child)

    # --- in the child: never returns

    def become_session(self, request: dict[str, Any], fds: list[int]) -> None:
        """The forked child: whatever happens here ends with ``_exit``, never unwinding into the template's frames."""
        code = 1
        try:
            code = self._become_session(request, fds)
        except BaseException:
            traceback.print_exc()
        _exit(code)

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
            isolate.enter_image_session(given[0], uid, gid, workdir, int(request["disk_bytes"]), program, files)
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
        """pid 1 reaps orphans while its child supervises the agent (the shape bwrap gives cold sessions)."""
        child = os.fork()
        if child:
            os.close(agent_fd)
            os.close(control_fd)
            os.close(ready_fd)
            return _reap_until(child)
        agent = os.fork()
        if agent == 0:
            os.close(agent_fd)
            os.close(control_fd)
            self.serve_agent(ready_fd)
            return 0
        import asyncio

        # The agent says "ready" once uvicorn listens (the host's listeners queue connections until the supervisor
        # accepts them), so the first /ping already succeeds; the supervisor's own ready byte goes nowhere.
        os.close(ready_fd)
        unused = os.open("/dev/null", os.O_WRONLY)
        options = {
            "agent_fd": agent_fd,
            "control_fd": control_fd,
            "ready_fd": unused,
            "port": self.port,
            "outbound": self.outbound,
        }
        return int(asyncio.run(supervisor.supervise(options, agent)))

    def serve_agent(self, ready_fd: int) -> None:
        """What ``uvicorn.run`` would have done in a cold start, then the interpreter's exit handlers."""
        import asyncio

        import uvicorn

        uvicorn.Server.serve = self.original_server_serve
        server = uvicorn.Server(self.config)
        serve = server.serve

        async def serve_and_tell(sockets: Any = None) -> None:
            task = asyncio.ensure_future(serve(sockets=sockets))
            while not server.started and not task.done():
                await asyncio.sleep(0.001)
            os.write(ready_fd, b"1" if server.started else b"0")
            os.close(ready_fd)
            await task

        server.serve = serve_and_tell  # type: ignore[method-assign]
        self.original_server_run(server)  # uvicorn's own run: its event loop choice, signal handling and shutdown
        atexit._run_exitfuncs()


def _posix_timers() -> bool:
    with open("/proc/self/timers") as timers:
        return bool(timers.read().strip())


def _children() -> list[int]:
    """Pids of this process's children (the kernel's list for its one thread)."""
    with open(f"/proc/self/task/{os.getpid()}/children") as children:
        return [int(pid) for pid in children.read().split()]


def _reap_finished() -> set[int]:
    """Collect first processes that have handed over to their session's pid 1 (they exit right after)."""
    reaped = set()
    while True:
        try:
            pid, _ = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return reaped
        if pid == 0:
            return reaped
        reaped.add(pid)


def _reap_until(child: int) -> int:
    while True:
        try:
            pid, status = os.wait()
        except ChildProcessError:
            return 1
        except InterruptedError:
            continue
        if pid == child:
            code = os.waitstatus_to_exitcode(status)
            return code if code >= 0 else 128 - code


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
            zygote.credentials = TemplateCredentials(options["template-credentials-port"])
        zygote.install_hooks()
        zygote.run_agent(argv)
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
