"""A warm template: one version's agent imported once, in a sandbox of its own, and forked into new sessions.

``NamespaceTemplate`` is the one owner of everything about a template: its process and control socket, the
*prepared fork* it keeps ahead of the next session (and the refill that makes the next one), its fork count and
its retirement. It acquires host resources through the ``SessionResources`` it is given; the backend only asks it
for forks. Words: the *template* is this sandbox; the *zygote* is the program in it (``sandbox/zygote.py``) that
imports the agent and forks; a *prepared fork* is a session forked ahead and waiting for ``start`` (``forking``).

The template runs in its own cgroup, pid/mount/net/ipc/uts namespaces and root view (the same bind list as a
session), as its own leased uid without capabilities, under the session seccomp policy less ``mount``, ``umount2``
and ``unshare`` (``seccomp.TEMPLATE_ALLOWS``). It stays in the initial user namespace, so only the host (root) can
write the uid map of a session it forks: each session gets its own leased uid, never the template's.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import heapq
import itertools
import logging
import os
import socket
import subprocess
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import replace
from pathlib import Path

from hangar.domain.errors import InternalError
from hangar.sandbox.ahead import AHEAD
from hangar.sandbox.base import SandboxSpec, Template, TemplateUnsafe
from hangar.sandbox.namespace import forking, seccomp
from hangar.sandbox.namespace.cgroups import Cgroup
from hangar.sandbox.namespace.forking import FORK_STEP_TIMEOUT_S, PreparedFork, TemplateFault
from hangar.sandbox.namespace.launcher import data_fd, fill
from hangar.sandbox.namespace.messages import parse, receive, seqpacket_pair
from hangar.sandbox.namespace.resources import SessionResources
from hangar.sandbox.namespace.template_launch import IMAGE_TEMPLATE_ALLOWS, template_argv, template_bwrap_args
from hangar.sandbox.state import StateDir
from hangar.sandbox.supervised import spawn, tail, wait_exit

log = logging.getLogger(__name__)

TEMPLATE_READY_TIMEOUT_S = 120.0  # the agent's imports run here: heavy frameworks take seconds
PIPELINE_DEPTH = 2  # fork requests in the zygote's socket at once: it reads the next one as soon as it answered one


class NamespaceTemplate(Template):
    def __init__(
        self,
        spec: SandboxSpec,
        state: StateDir,
        proc: subprocess.Popen[bytes],
        uid: int,
        cgroup: Cgroup,
        control: socket.socket,
        resources: SessionResources,
    ) -> None:
        self.id = spec.sandbox_id
        self.spec = spec
        self.state = state
        self.proc = proc
        self.uid = uid
        self.cgroup = cgroup
        self.control = control
        self.resources = resources
        self.unsafe_reason: str | None = None
        self.broken: str | None = None  # takes no more forks; a new template may do better (not unsafe)
        self.forks = 0
        self.zygote_pid: int | None = None  # host pid of the zygote, the process that imported the agent
        self.retired = False
        self.lock = ForkQueue()  # one fork request at a time on the control socket, a request's own first
        self.prepared: PreparedFork | None = None  # the next session's fork, made ahead of its request
        self.refill: asyncio.Task[None] | None = None  # making ``prepared``
        self.taken = {"prepared": 0, "inline": 0}  # how sessions got their fork: made ahead, or on their request path
        self.queued_s = 0.0  # time fork requests waited for the control socket (the zygote forks one at a time)
        self.answers: collections.deque[asyncio.Future[str]] = collections.deque()  # requests sent, in order
        self.reader: asyncio.Task[None] | None = None  # reading the zygote's answers while some are due
        self.room = asyncio.Event()  # an answer came: fewer than ``PIPELINE_DEPTH`` requests in the zygote

    @classmethod
    async def start(cls, spec: SandboxSpec, resources: SessionResources, bwrap: str) -> NamespaceTemplate:
        """Start the zygote on the agent's import in a sandbox of its own; ready once the import handed over its
        app (then the first session's fork is prepared at once)."""
        state, uid, cgroup = await resources.acquire(spec)
        for path in (state.home, state.tmp):
            path.chmod(0o711)  # a forked child (another uid) must traverse them to the version's binds beneath
        host_end, child_end = seqpacket_pair()
        proc: subprocess.Popen[bytes] | None = None
        try:
            allows = IMAGE_TEMPLATE_ALLOWS if spec.rootfs is not None else seccomp.TEMPLATE_ALLOWS
            filter_fd = data_fd("hangar-seccomp", seccomp.compile_bpf(allow=allows))
            args_fd = data_fd("hangar-bwrap-args")
            try:
                fill(args_fd, template_bwrap_args(spec, state, resources.inside_files(), filter_fd, uid))
                argv = template_argv(bwrap, spec, uid, cgroup, child_end.fileno(), args_fd)
                # SAFETY: root starts bwrap in the template's cgroup; isolate.py (ours, stdlib only, no site imports)
                # drops to the leased uid with no capabilities and no_new_privs before the agent's interpreter starts.
                fds = (filter_fd, args_fd, child_end.fileno())
                proc = spawn(argv, {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin"}, Path("/"), state.log, fds)
            finally:
                os.close(filter_fd)
                os.close(args_fd)
                child_end.close()
            template = cls(spec, state, proc, uid, cgroup, host_end, resources)
            message, pid = await receive(host_end, TEMPLATE_READY_TIMEOUT_S)
            event = parse(message)
            if event.get("event") == "ready":
                template.zygote_pid = pid
                log.info("warm template %s ready (zygote pid %s)", spec.sandbox_id, pid)
                template.prepare_next()  # the first session already finds its fork prepared
                return template
            reason = str(event.get("reason") or f"the template ended before it was ready: {tail(state.log)}")
            if event.get("event") == "unsafe":
                raise TemplateUnsafe(reason)
            raise InternalError(f"warm template {spec.sandbox_id} failed: {reason}")
        except BaseException:
            host_end.close()
            if proc is not None:
                await cgroup.kill_all()
                await wait_exit(proc, 2.0)
            await resources.release(spec.sandbox_id, state, cgroup, uid, None)
            raise

    def alive(self) -> bool:
        usable = not self.retired and self.unsafe_reason is None and self.broken is None
        return usable and self.proc.poll() is None and running(self.zygote_pid)

    def describe(self) -> dict[str, object]:
        return {
            "id": self.id,
            "alive": self.alive(),
            "forks": self.forks,
            "zygotePid": self.zygote_pid,
            "unsafeReason": self.unsafe_reason,
            "broken": self.broken,
            "forksTaken": dict(self.taken),
            "forkQueueSeconds": round(self.queued_s, 4),
        }

    async def take_fork(self, spec: SandboxSpec) -> PreparedFork:
        """The prepared fork when it fits ``spec`` (it keeps its own sandbox id), else one prepared now. The caller
        starts it or discards it, then calls ``prepare_next``. Work ahead of a request (a spare: ``AHEAD``) always
        prepares its own, after any request's: the prepared fork is kept for a session that found no spare."""
        prepared, self.prepared = (None, self.prepared) if AHEAD.get() else (self.prepared, None)
        if prepared is not None:
            if prepared.alive() and replace(spec, sandbox_id=prepared.spec.sandbox_id, storage=None) == prepared.spec:
                self.taken["prepared"] += 1
                return prepared
            await prepared.discard(self.resources)
        self.taken["inline"] += 1
        return await self._prepare(spec)

    def begin_session(self, prepared: PreparedFork) -> forking.ForkedProcess:
        """Tell a fork taken from this template to start the supervisor and the agent (``forking.finish_fork``);
        counted as one of its forks. The caller waits for the agent's ready byte."""
        process = forking.finish_fork(prepared)
        self.forks += 1
        return process

    def prepare_next(self) -> None:
        """Prepare the next session's fork beside the request path (one at a time)."""
        if self.refill is not None or self.prepared is not None or not self.alive():
            return
        self.refill = asyncio.create_task(self._refill(), name=f"refill-{self.id}")

    async def _refill(self) -> None:
        AHEAD.set(True)  # this task's own context: a request's fork goes first
        spec = replace(self.spec, sandbox_id=f"hs-{uuid.uuid4().hex[:24]}")
        try:
            prepared = await self._prepare(spec)
        except Exception as exc:
            log.warning("preparing a fork of template %s failed: %s", self.id, exc)
            return
        finally:
            self.refill = None
        if self.alive() and self.prepared is None:
            self.prepared = prepared
        else:
            await prepared.discard(self.resources)

    async def _prepare(self, spec: SandboxSpec) -> PreparedFork:
        try:
            return await forking.prepare_fork(self.resources, spec, self.request_fork, self.state.log, self.zygote_pid)
        except TemplateFault as fault:  # the fork showed this template must take no more
            if fault.unsafe:
                self.unsafe_reason = fault.reason
            else:
                self.broken = fault.reason  # its owner starts a new one (with back-off)
            raise

    async def request_fork(self, request: bytes, fds: list[int]) -> str:
        """Send the zygote one fork request with the session's fds; its answer (``forked`` when it forked).

        Requests are pipelined: up to ``PIPELINE_DEPTH`` wait in the zygote's socket, so it reads the next one as
        soon as it answered one instead of waiting for the host to send it; it answers in order. Who sends next is
        the ``ForkQueue``'s choice (a session's own fork first)."""
        began = time.monotonic()
        async with self.lock.turn(ahead=AHEAD.get()):
            while len(self.answers) >= PIPELINE_DEPTH:  # the turn is kept: the next to send is already chosen
                self.room.clear()
                await self.room.wait()
            self.queued_s += time.monotonic() - began
            if not self.alive():
                raise InternalError(f"warm template {self.id} is not running")
            socket.send_fds(self.control, [request], fds)
            answer: asyncio.Future[str] = asyncio.get_running_loop().create_future()
            self.answers.append(answer)
            if self.reader is None:
                self.reader = asyncio.create_task(self._read_answers(), name=f"fork-answers-{self.id}")
        return await answer

    async def _read_answers(self) -> None:
        """Hand the zygote's answers to the requests in the order they were sent. An answer that does not come in
        time leaves the order unknown: the template takes no more forks (its owner starts a new one)."""
        try:
            while self.answers:
                try:
                    outcome = await self._outcome(FORK_STEP_TIMEOUT_S)
                except InternalError as exc:
                    self.broken = f"a fork request went unanswered ({exc.message})"
                    while self.answers:
                        waiting = self.answers.popleft()
                        if not waiting.done():
                            waiting.set_exception(InternalError(f"warm template {self.id}: {self.broken}"))
                    return
                answered = self.answers.popleft()
                if not answered.done():  # its request's caller may have gone (cancelled): the answer is dropped
                    answered.set_result(outcome)
                self.room.set()
        finally:
            self.reader = None
            self.room.set()

    async def _outcome(self, timeout: float) -> str:
        """The zygote's next answer; an unsafe answer (or none) retires the template for good."""
        message, _ = await receive(self.control, timeout)
        event = parse(message)
        if event.get("event") == "unsafe" or not message:
            self.unsafe_reason = str(event.get("reason") or "the template exited")
            return f"template unusable: {self.unsafe_reason}"
        if event.get("event") == "fork_failed":
            return str(event.get("reason"))
        return str(event.get("event"))

    async def stop(self) -> None:
        """Take no more forks: drop the prepared fork, tell the zygote to exit (after a fork in progress), wait until
        the template's pid 1 ends (after the last session forked from it), then release its resources."""
        if self.retired:
            return
        self.retired = True
        if self.refill is not None:  # bounded by the fork steps' timeouts; cancelling it could cut its cleanup
            with contextlib.suppress(BaseException):
                await self.refill
        if self.prepared is not None:
            prepared, self.prepared = self.prepared, None
            await prepared.discard(self.resources)
        async with self.lock.turn(ahead=False):  # fork conversations in progress finish on an open socket
            if self.reader is not None:
                with contextlib.suppress(BaseException):
                    await self.reader
            self.control.close()  # the zygote reads EOF and exits
        try:
            while not await wait_exit(self.proc, 3600.0):
                pass
        finally:
            await self.resources.release(self.id, self.state, self.cgroup, self.uid, None)


class ForkQueue:
    """A lock whose waiters take turns by priority: a request's own fork before forks made ahead of one, each kind
    in arrival order. (The zygote forks one request at a time; under churn the spares being refilled would
    otherwise stand in front of the session waiting for its fork.)"""

    def __init__(self) -> None:
        self._held = False
        self._waiting: list[tuple[int, int, asyncio.Future[None]]] = []
        self._order = itertools.count()

    @contextlib.asynccontextmanager
    async def turn(self, *, ahead: bool) -> AsyncIterator[None]:
        await self._acquire(ahead)
        try:
            yield
        finally:
            self._release()

    async def _acquire(self, ahead: bool) -> None:
        if not self._held:
            self._held = True
            return
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        heapq.heappush(self._waiting, (int(ahead), next(self._order), waiter))
        try:
            await waiter
        except asyncio.CancelledError:
            if waiter.done() and not waiter.cancelled():  # handed the turn as it was cancelled: pass it on
                self._release()
            else:
                waiter.cancel()  # ``_release`` skips it
            raise

    def _release(self) -> None:
        while self._waiting:
            _, _, waiter = heapq.heappop(self._waiting)
            if not waiter.done():
                waiter.set_result(None)  # the turn passes straight to it: ``_held`` stays set
                return
        self._held = False


def running(pid: int | None) -> bool:
    if pid is None:
        return False
    try:
        with open(f"/proc/{pid}/stat", "rb") as stat:
            return stat.read().rsplit(b")", 1)[1].split()[0] != b"Z"
    except (OSError, IndexError):
        return False
