"""Warm templates on the host side: start a version's zygote in a sandbox of its own, fork sessions from it.

The template runs in its own cgroup, pid/mount/net/ipc/uts namespaces and root view (the same bind list as a
session), as its own leased uid without capabilities, under the session seccomp policy less ``mount``, ``umount2``
and ``unshare`` (``seccomp.TEMPLATE_ALLOWS``). It stays in the initial user namespace, so only the host (root) can
write the uid map of a session it forks: each session gets its own leased uid, never the template's.

A fork, step by step (``fork_session``): the host creates the session's state dir, uid lease, cgroup, log tmpfs and
sockets exactly as a cold start does, and sends the template one request with the session's fds. The template's
child announces its host pid (SCM_CREDENTIALS, checked by the kernel), unshares user, mount, pid, net, ipc and uts
namespaces, and waits. The host maps uid 1000 to the session's leased uid, moves the child into the session's
cgroup, attaches the session's veth to its network namespace, and says ``go``. The child becomes pid 1 of the new
pid namespace, isolates itself (``isolate.enter_session``), announces that pid, and starts the supervisor and the
agent. From there the host treats it like any other namespace sandbox (same stop, stats, exec and cleanup).
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import select
import signal
import socket
import struct
import subprocess
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from hangar.domain.errors import InternalError
from hangar.sandbox.base import OUTBOUND_DIR, SandboxSpec, Template, TemplateUnsafe
from hangar.sandbox.namespace import image_root, rootfs, seccomp
from hangar.sandbox.namespace.cgroups import Cgroup
from hangar.sandbox.namespace.launcher import JOIN_CGROUPS, data_fd, fill
from hangar.sandbox.state import StateDir
from hangar.sandbox.supervised import agent_environment, outbound_options, spawn, tail, wait_exit

if TYPE_CHECKING:
    from hangar.sandbox.namespace.backend import NamespaceBackend

log = logging.getLogger(__name__)

TEMPLATE_READY_TIMEOUT_S = 120.0  # the agent's imports run here: heavy frameworks take seconds
MESSAGE_LIMIT = 65536
CREDS = struct.Struct("iII")
SYSTEM_PYTHON = "/usr/bin/python3.11"
# An image's forks attach a root of their own and pivot into it (forking.prepare_fork): their template may do both
# (it has no capabilities in the initial user namespace; the session filter stacked in each fork denies them again).
IMAGE_TEMPLATE_ALLOWS = seccomp.TEMPLATE_ALLOWS | {"move_mount", "pivot_root"}
TEMPLATE_NAMESPACES = (
    "--unshare-pid",
    "--unshare-net",
    "--unshare-ipc",
    "--unshare-uts",
    "--unshare-cgroup",
    "--as-pid-1",  # isolate.py is pid 1 and reaps; bwrap would otherwise exit (and end the namespace) with the zygote
)


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


class NamespaceTemplate(Template):
    def __init__(
        self,
        spec: SandboxSpec,
        state: StateDir,
        proc: subprocess.Popen[bytes],
        uid: int,
        cgroup: Cgroup,
        control: socket.socket,
        retire: Callable[[NamespaceTemplate], Awaitable[None]],
    ) -> None:
        self.id = spec.sandbox_id
        self._retire = retire
        self.spec = spec
        self.state = state
        self.proc = proc
        self.uid = uid
        self.cgroup = cgroup
        self.control = control
        self.unsafe_reason: str | None = None
        self.broken: str | None = None  # takes no more forks; a new template may do better (not unsafe)
        self.forks = 0
        self.zygote_pid: int | None = None  # host pid of the process that imported the agent
        self.retired = False
        self.lock = asyncio.Lock()  # one fork request at a time on the control socket
        self.spare: Any = None  # a forking.PreparedFork made ahead of the next session
        self.refill: asyncio.Task[None] | None = None

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
        }

    async def stop(self) -> None:
        """Take no more forks; the zygote exits once a fork in progress is done; its pid 1 stays until the last forked
        session ends, then the template's cgroup, files and uid lease go (``NamespaceBackend.retire_template``)."""
        if self.retired:
            return
        self.retired = True
        await self._retire(self)


def running(pid: int | None) -> bool:
    if pid is None:
        return False
    try:
        with open(f"/proc/{pid}/stat", "rb") as stat:
            return stat.read().rsplit(b")", 1)[1].split()[0] != b"Z"
    except (OSError, IndexError):
        return False


async def receive(sock: socket.socket, timeout: float) -> tuple[bytes, int | None]:
    """One message from a non-blocking SOCK_SEQPACKET socket and the sender's host pid, if it sent credentials."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        try:
            data, ancillary, _, _ = sock.recvmsg(MESSAGE_LIMIT, socket.CMSG_SPACE(CREDS.size))
        except BlockingIOError:
            readable: asyncio.Future[None] = loop.create_future()
            loop.add_reader(sock.fileno(), _resolve, readable)
            try:
                await asyncio.wait_for(readable, max(0.0, deadline - loop.time()))
            except TimeoutError:
                raise InternalError("the warm template did not answer in time") from None
            finally:
                loop.remove_reader(sock.fileno())
            continue
        pid = None
        for level, kind, payload in ancillary:
            if level == socket.SOL_SOCKET and kind == socket.SCM_CREDENTIALS:
                pid = CREDS.unpack(payload[: CREDS.size])[0]
        return data, pid


def _resolve(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)


def seqpacket_pair() -> tuple[socket.socket, socket.socket]:
    host, child = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    host.setsockopt(socket.SOL_SOCKET, socket.SO_PASSCRED, 1)
    host.setblocking(False)
    return host, child


def template_argv(
    backend: NamespaceBackend, spec: SandboxSpec, uid: int, cgroup: Cgroup, control_fd: int, args_fd: int
) -> list[str]:
    if spec.rootfs is not None:
        python, reason = image_root.image_python(spec.rootfs, spec.command[0], image_path(spec))
        if python is None:
            raise TemplateUnsafe(reason)
        zygote = [python, image_root.ZYGOTE_IN_IMAGE, f"--control-fd={control_fd}", f"--port={spec.agent_port}"]
        zygote.append("--image=1")
        stage = [*image_root.host_interpreter(), "-I", "-S", image_root.ISOLATE_IN_IMAGE]
    else:
        python = str(spec.env_dir / "bin" / "python")
        zygote = [python, rootfs.ZYGOTE_PATH, f"--control-fd={control_fd}", f"--port={spec.agent_port}"]
        stage = [SYSTEM_PYTHON, "-I", "-S", rootfs.ISOLATE_PATH]
    zygote += outbound_options(spec, OUTBOUND_DIR)
    if spec.outbound is not None and spec.outbound.template_credentials_port is not None:
        zygote.append(f"--template-credentials-port={spec.outbound.template_credentials_port}")
    zygote.append("--")
    procs = cgroup.procs_files()
    return [
        "/bin/sh",
        "-c",
        JOIN_CGROUPS,
        "hangar-template",
        str(len(procs)),
        *procs,
        backend.bwrap,
        "--args",
        str(args_fd),
        "--",
        *stage,
        "template",
        f"--uid={uid}",
        "--",
        *zygote,
        *spec.command,
    ]


def template_bwrap_args(
    backend: NamespaceBackend, spec: SandboxSpec, state: StateDir, seccomp_fd: int, uid: int | None = None
) -> bytes:
    """bwrap runs as root here (no user namespace: only the host may map a forked session's uid), builds the same
    root view as for a session and loads the template filter; ``isolate.py template`` then drops to the leased
    uid. The /proc it gets is mounted by isolate.py, uncovered, so that forked sessions can mount their own."""
    etc = rootfs.write_etc(state, spec.outbound.hosts if spec.outbound else ())
    inside = backend.inside_files()
    if spec.rootfs is not None:
        user = image_root.resolve_user(spec.rootfs, spec.user)
        env = agent_environment(spec, spec.agent_port, user.home, "/tmp")
        if uid is None:
            raise InternalError("an image template needs its uid lease")
        merged = image_root.mount_root(state, spec.rootfs, uid, spec.workdir, spec.outbound)
        image_root.template_mount_points(merged)
        mounts = image_root.image_mounts(merged, etc, inside, spec.limits.disk_bytes, spec.outbound)
        # /.hangar is a root-owned tmpfs here, not the overlay's directory: the import (which owns the template's
        # root) can neither rename it nor plant what forks bind from it.
        mounts[3:3] = ["--perms", "0755", "--size", "65536", "--tmpfs", image_root.HIDDEN]
        mounts += ["--ro-bind", str(inside / "isolate.py"), image_root.ISOLATE_IN_IMAGE]
        mounts += ["--ro-bind", str(inside / "zygote.py"), image_root.ZYGOTE_IN_IMAGE]
        mounts += ["--ro-bind", str(inside / "warmup.py"), f"{image_root.HIDDEN}/warmup.py"]
        stage = state.path / "stage"
        stage.mkdir(mode=0o755)
        mounts += ["--ro-bind", str(stage), image_root.FORK_STAGE]
        chdir = image_root.normalized(spec.workdir)
    else:
        env = agent_environment(spec, spec.agent_port, rootfs.HOME, "/tmp")
        mounts = rootfs.bwrap_mounts(
            state, etc, spec.code_dir, spec.env_dir, inside, spec.limits.disk_bytes, spec.outbound
        )
        chdir = str(spec.code_dir)
    mounts = _open_parents([arg if arg != "--proc" else "--dir" for arg in mounts])
    # As root, bwrap makes /dev/shm root's 0755: give it the mode a user-namespace bwrap gives the sandbox uid.
    at = mounts.index("/dev/shm") - 3  # ... --size N --tmpfs /dev/shm
    mounts[at:at] = ["--perms", "1777"]
    args = [*TEMPLATE_NAMESPACES, "--hostname", rootfs.HOSTNAME, "--die-with-parent", "--new-session", "--clearenv"]
    for key, value in env.items():
        args += ["--setenv", key, value]
    args += [*mounts, "--chdir", chdir, "--seccomp", str(seccomp_fd)]
    return b"\0".join(arg.encode() for arg in args) + b"\0"


def image_path(spec: SandboxSpec) -> str:
    """The PATH the image's agent gets (its Env's, else a container runtime's default)."""
    return agent_environment(spec, spec.agent_port, "/", "/tmp").get("PATH", "")


BIND_OPTIONS = {"--bind", "--ro-bind", "--ro-bind-try", "--symlink"}  # two-argument options: SOURCE DEST
DEST_OPTIONS = {"--dir", "--tmpfs", "--dev", "--proc"}  # one-argument options: DEST


def _open_parents(mounts: list[str]) -> list[str]:
    """bwrap running as root creates missing parents of a bind's destination as root with mode 0700, which the
    template's uid could not traverse (a user-namespace bwrap creates them as the sandbox uid): declare each such
    parent first as a 0755 directory."""
    out: list[str] = []
    declared = {"/"}
    i = 0
    while i < len(mounts):
        option = mounts[i]
        if option in BIND_OPTIONS:
            dest = mounts[i + 2]
            parent = Path(dest).parent
            missing = [a for a in reversed([parent, *parent.parents]) if str(a) not in declared]
            for ancestor in missing:
                out += ["--perms", "0755", "--dir", str(ancestor)]
                declared.add(str(ancestor))
            out += mounts[i : i + 3]
            declared.add(dest)
            i += 3
        elif option in DEST_OPTIONS:
            declared.add(mounts[i + 1])
            out += mounts[i : i + 2]
            i += 2
        elif option == "--size":
            out += mounts[i : i + 2]
            i += 2
        else:
            out.append(option)
            i += 1
    return out


async def start_template(backend: NamespaceBackend, spec: SandboxSpec) -> NamespaceTemplate:
    state, uid, cgroup = await backend.prepare(spec)
    for path in (state.home, state.tmp):
        path.chmod(0o711)  # a forked child (another uid) must traverse them to the version's binds beneath
    host_end, child_end = seqpacket_pair()
    template: NamespaceTemplate | None = None
    proc: subprocess.Popen[bytes] | None = None
    try:
        allows = IMAGE_TEMPLATE_ALLOWS if spec.rootfs is not None else seccomp.TEMPLATE_ALLOWS
        filter_fd = data_fd("hangar-seccomp", seccomp.compile_bpf(allow=allows))
        args_fd = data_fd("hangar-bwrap-args")
        try:
            fill(args_fd, template_bwrap_args(backend, spec, state, filter_fd, uid))
            argv = template_argv(backend, spec, uid, cgroup, child_end.fileno(), args_fd)
            # SAFETY: root starts bwrap in the template's cgroup; isolate.py (ours, stdlib only, no site imports)
            # drops to the leased uid with no capabilities and no_new_privs before the agent's interpreter starts.
            fds = (filter_fd, args_fd, child_end.fileno())
            proc = spawn(argv, {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin"}, Path("/"), state.log, fds)
        finally:
            os.close(filter_fd)
            os.close(args_fd)
            child_end.close()
        template = NamespaceTemplate(spec, state, proc, uid, cgroup, host_end, backend.retire_template)
        message, pid = await receive(host_end, TEMPLATE_READY_TIMEOUT_S)
        event = _parse(message)
        if event.get("event") == "ready":
            template.zygote_pid = pid
            log.info("warm template %s ready (zygote pid %s)", spec.sandbox_id, pid)
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
        await backend.release(spec.sandbox_id, state, cgroup, uid, None)
        raise


def _parse(message: bytes) -> dict[str, Any]:
    try:
        value = json.loads(message) if message else {}
    except ValueError:
        value = {"event": "failed", "reason": f"unreadable message {message[:80]!r}"}
    return value if isinstance(value, dict) else {}


async def outcome(template: NamespaceTemplate, timeout: float) -> str:
    """The template's answer to the request just sent; an unsafe answer (or none) retires it for good."""
    message, _ = await receive(template.control, timeout)
    event = _parse(message)
    if event.get("event") == "unsafe" or not message:
        template.unsafe_reason = str(event.get("reason") or "the template exited")
        return f"template unusable: {template.unsafe_reason}"
    if event.get("event") == "fork_failed":
        return str(event.get("reason"))
    return str(event.get("event"))
