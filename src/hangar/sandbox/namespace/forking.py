"""Forking one session from a warm template, in two halves so that nearly all of it runs ahead of the request.

``prepare_fork`` (the template runs it beside the request path and keeps the result: its *prepared fork*): the
host acquires the session's resources exactly as a cold start does (``SessionResources``) and asks the template,
through the ``ask`` it is given, to fork with the session's fds. The template's zygote forks the session's first
process, which announces its host pid (SCM_CREDENTIALS, checked by the kernel) and unshares user, mount, pid, net,
ipc and uts namespaces. The host maps uid 1000 to the session's leased uid (only root in the initial user namespace
can: the template never chooses a uid), moves the process into the session's cgroup (on cgroup v1 each move waits
for an RCU grace period, ~9 ms here) and, with egress, attaches the session's veth to its network namespace, then
says ``go``. The process forks the session's pid 1, which isolates itself completely (``isolate.enter_session``:
mounts, no capabilities, no_new_privs, the session seccomp filter) and announces itself; the host verifies that
isolation from /proc (``verify_isolation``) and keeps the process waiting. Nothing of the agent has run in it since
the template's import.

``finish_fork`` (on the request path): ``start``; pid 1 starts the supervisor and the agent, and the agent writes
the ready byte once uvicorn listens. From there the host treats it like any other namespace sandbox (same stop,
stats, exec and cleanup).

This module never touches a template's state: a failure that condemns the template is raised as ``TemplateFault``
and the template (its one owner) records it.
"""

from __future__ import annotations

import asyncio
import json
import os
import select
import signal
import socket
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

from hangar.domain.errors import InternalError
from hangar.sandbox.base import SandboxSpec
from hangar.sandbox.namespace import image_root, network, rootfs, seccomp, storage
from hangar.sandbox.namespace.cgroups import Cgroup
from hangar.sandbox.namespace.launcher import data_fd
from hangar.sandbox.namespace.messages import receive, seqpacket_pair
from hangar.sandbox.namespace.resources import SessionResources
from hangar.sandbox.state import StateDir
from hangar.sandbox.supervised import Channels, tail

FORK_STEP_TIMEOUT_S = 10.0
LOG_BUDGET_CAP = 64 << 20

Ask = Callable[[bytes, list[int]], Awaitable[str]]  # the template's fork request: (request, fds) -> its answer


class TemplateFault(InternalError):
    """A fork failed in a way that condemns its template: ``unsafe`` (no template of this version would do better:
    tampering or a bug) or not (broken: a new template may do better)."""

    def __init__(self, message: str, reason: str, *, unsafe: bool) -> None:
        super().__init__(message)
        self.reason = reason
        self.unsafe = unsafe


class ForkedProcess:
    """A forked session's pid 1, watched through a pidfd: its parent is the template's pid 1, not Hangar."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self._pidfd = os.pidfd_open(pid)
        self.returncode: int | None = None

    def poll(self) -> int | None:
        if self.returncode is None and self._pidfd >= 0 and _readable(self._pidfd):
            self.returncode = -1  # not our child: its status goes to the template's reaper
            os.close(self._pidfd)
            self._pidfd = -1
        return self.returncode

    def send_signal(self, signum: int) -> None:
        if self.poll() is None:
            signal.pidfd_send_signal(self._pidfd, signum)

    def __del__(self) -> None:
        if self._pidfd >= 0:
            os.close(self._pidfd)


def _readable(fd: int) -> bool:
    """poll(2), not select(2): a busy server's descriptors go past select's 1024 limit."""
    poller = select.poll()
    poller.register(fd, select.POLLIN)
    return bool(poller.poll(0))


@dataclass
class PreparedFork:
    """A session's first process, forked ahead of a request and waiting for ``go`` in its namespaces and cgroup."""

    spec: SandboxSpec
    state: StateDir
    uid: int
    cgroup: Cgroup
    link: network.Link | None
    channels: Channels
    handshake: socket.socket
    process: ForkedProcess  # the session's pid 1, isolated and checked, waiting for ``start``

    def alive(self) -> bool:
        return self.process.poll() is None

    async def discard(self, resources: SessionResources) -> None:
        """Not to be used: its process dies with its cgroup, its resources are released."""
        self.handshake.close()
        self.channels.close()
        await resources.release(self.spec.sandbox_id, self.state, self.cgroup, self.uid, self.link)


def under_writable(spec: SandboxSpec) -> list[str]:
    """The version's directories that a forked session's fresh home or /tmp would cover (tests keep them in /tmp)."""
    roots = (Path("/tmp"), Path(rootfs.HOME))
    return [str(p) for p in (spec.env_dir, spec.code_dir) if any(p.is_relative_to(root) for root in roots)]


def _map_and_move(
    pid: int, uid: int, cgroup: Cgroup, link: network.Link | None, inside: tuple[int, int] | None = None
) -> None:
    """The host's part, between the child's unshare and its ``go`` (blocking: runs in a thread). ``inside``: the
    image user's uid and gid, mapped onto the lease instead of the code sandbox's 1000."""
    ids = inside or (rootfs.SANDBOX_UID, rootfs.SANDBOX_UID)
    for name, inner in (("uid_map", ids[0]), ("gid_map", ids[1])):
        with open(f"/proc/{pid}/{name}", "w") as mapping:
            mapping.write(f"{inner} {uid} 1\n")
    for procs in cgroup.procs_files():
        with open(procs, "w") as members:
            members.write(str(pid))
    if link is not None:
        network.create(link, owner_pid=pid)


def log_budget(disk_bytes: int) -> int:
    """A cold sandbox's one tmpfs holds home, /tmp and its log; a fork's home and /tmp are a tmpfs it mounts itself,
    so the host's tmpfs holds only the log: the budget is split, never doubled."""
    return max(min(disk_bytes // 4, LOG_BUDGET_CAP), 64 * 1024)


async def prepare_fork(
    resources: SessionResources, spec: SandboxSpec, ask: Ask, template_log: Path, zygote_pid: int | None
) -> PreparedFork:
    """A session forked from the template up to its isolated, checked pid 1 waiting for ``start``.

    ``ask`` sends the template the fork request; ``template_log`` and ``zygote_pid`` are the template's log (for
    errors) and the host pid of its zygote (the isolation check compares against it)."""
    log_bytes = log_budget(spec.limits.disk_bytes)
    user = image_root.resolve_user(spec.rootfs, spec.user) if spec.rootfs is not None else None
    # An image fork's root (its overlay's upper layer) lives on the host's tmpfs with its log: the whole budget.
    state, uid, cgroup = await resources.acquire(spec, writable_bytes=None if user else log_bytes)
    link: network.Link | None = None
    channels: Channels | None = None
    host_end, child_end = seqpacket_pair()
    try:
        link = await resources.plan_link(spec, uid)
        channels = Channels.open(state)
        log_fd = os.open(state.log, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        filter_fd = data_fd("hangar-seccomp", seccomp.compile_bpf())
        try:
            request: dict[str, object] = {
                "disk_bytes": max(spec.limits.disk_bytes - log_bytes, 4096),
                "keep": under_writable(spec),
                "storage": await asyncio.to_thread(storage.fork_request, resources.state_root, spec, uid),
            }
            if user is not None:
                request["image"] = {"uid": user.uid, "gid": user.gid, "workdir": image_root.normalized(spec.workdir)}
            fds = [child_end.fileno(), *channels.child_fds(), log_fd, filter_fd]
            answer = await ask(json.dumps(request).encode(), fds)
        finally:
            os.close(log_fd)
            os.close(filter_fd)
            child_end.close()
            channels.close_child_ends()
        if answer != "forked":
            raise InternalError(f"the template could not fork: {answer}")
        message, pid = await receive(host_end, FORK_STEP_TIMEOUT_S)
        if message != b"C" or pid is None:
            raise InternalError(f"the template's child did not announce itself: {tail(template_log)}")
        message, _ = await receive(host_end, FORK_STEP_TIMEOUT_S)
        if message != b"U":
            raise InternalError(f"the template's child could not unshare: {tail(template_log)}")
        inside = (user.uid, user.gid) if user is not None else None
        try:
            await asyncio.to_thread(_map_and_move, pid, uid, cgroup, link, inside)
        except OSError as exc:  # the child did not make its own user namespace: a bug, or tampering
            reason = f"a fork's namespaces could not be set up ({exc})"
            raise TemplateFault(
                f"the forked session's isolation could not be set up: {exc}", reason, unsafe=True
            ) from exc
        if spec.rootfs is not None:
            # The session's own root, built here exactly as for a cold session (lower ID-mapped to its lease, upper
            # on its tmpfs); the fork attaches the detached copy in its namespaces and pivots into it.
            merged = await asyncio.to_thread(
                image_root.mount_root, state, spec.rootfs, uid, spec.workdir, spec.outbound
            )
            storage.image_fork_points(merged, spec)
            root_fd = image_root.detached_copy(merged)
            try:
                socket.send_fds(host_end, [b"go"], [root_fd])
            finally:
                os.close(root_fd)
        else:
            host_end.send(b"go")
        message, pid = await receive(host_end, FORK_STEP_TIMEOUT_S)
        if message != b"G" or pid is None:  # the template's owner starts a new one (with back-off)
            message_text = f"the forked session did not isolate itself: {tail(template_log)}"
            raise TemplateFault(message_text, "a fork failed to isolate itself", unsafe=False)
        process = ForkedProcess(pid)
        try:
            await verify_isolation(process.pid, uid, cgroup, zygote_pid)
        except InternalError as exc:  # a bug, or import-time code that tampered with the zygote: no more forks
            reason = f"a fork failed the host's isolation check ({exc.message})"
            raise TemplateFault(exc.message, reason, unsafe=True) from exc
        return PreparedFork(spec, state, uid, cgroup, link, channels, host_end, process)
    except BaseException:
        host_end.close()  # a child still waiting reads EOF and exits
        if channels is not None:
            channels.close()
        await resources.release(spec.sandbox_id, state, cgroup, uid, link)
        raise


def finish_fork(prepared: PreparedFork) -> ForkedProcess:
    """``start``: the isolated pid 1 starts the supervisor and the agent; the caller waits for the ready byte."""
    try:
        if prepared.process.poll() is not None:
            raise InternalError(f"the prepared session exited: {tail(prepared.state.log)}")
        prepared.handshake.send(b"start")
        return prepared.process
    finally:
        prepared.handshake.close()


STATUS_ZERO = ("CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb")
NAMESPACES = ("user", "mnt", "net", "pid", "ipc", "uts", "cgroup")


async def verify_isolation(pid: int, uid: int, cgroup: Cgroup, zygote_pid: int | None) -> None:
    """Check from the host, before anything of the agent runs again, what the fork says it did: the template ran
    the runtime owner's import code, so its word is not taken. Every property checked is one a process cannot undo
    (capabilities, no_new_privs, seccomp filters, namespaces, uid), so it holds for every process it will start."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + FORK_STEP_TIMEOUT_S
    while set(cgroup.pids()) - {pid}:  # the first process hands over and exits; nothing else may be there
        if loop.time() > deadline:
            raise InternalError(f"the forked session's cgroup holds other processes: {cgroup.pids()}")
        await asyncio.sleep(0.001)
    status = _status(pid)
    template_status = _status(zygote_pid or 0)
    problems = [name for name in STATUS_ZERO if int(status.get(name, "1"), 16)]
    if [status.get("Uid"), status.get("Gid")] != [f"{uid}\t{uid}\t{uid}\t{uid}"] * 2:
        problems.append(f"uid/gid {status.get('Uid')!r} / {status.get('Gid')!r}")
    if status.get("NoNewPrivs") != "1" or status.get("Seccomp") != "2":
        problems.append("no_new_privs/seccomp")
    if int(status.get("Seccomp_filters", "0")) <= int(template_status.get("Seccomp_filters", "0")):
        problems.append("the session filter is missing")
    for name in NAMESPACES:
        if os.readlink(f"/proc/{pid}/ns/{name}") == os.readlink(f"/proc/{zygote_pid}/ns/{name}"):
            problems.append(f"{name} namespace shared with the template")
    if problems:
        raise InternalError(f"the forked session is not isolated: {', '.join(problems)}")


def _status(pid: int) -> dict[str, str]:
    with open(f"/proc/{pid}/status") as status:
        return dict(line.rstrip("\n").split(":\t", 1) for line in status if ":\t" in line)
