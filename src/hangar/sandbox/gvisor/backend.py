"""The ``gvisor`` backend: every session in its own gVisor sandbox (``runsc``), a user-space kernel between the agent
and the host, on top of what the namespace backend gives (leased uid, cgroup limits, netns with egress rules).

It reuses the namespace backend for everything around the sandbox (state dir, uid lease, cgroup, size-capped tmpfs,
network, image overlay, orphan cleanup) and replaces only the launch: an OCI bundle run by ``runsc run`` inside the
sandbox's cgroup (``--ignore-cgroups``: runsc does not manage cgroups, the sandbox is already in its own). The
supervisor is the same program; ``entry.py`` gives it its sockets. Sessions always start cold.

gVisor's own processes count against the host cgroup: the Sentry's threads, the Gofer's, and on the ptrace platform
one stub process per guest process. So the host's pids limit is the session's plus room for those, and the session's
own limit is enforced inside, by the Sentry (RLIMIT_NPROC of the sandbox's non-root user): a fork bomb gets EAGAIN
from gVisor long before the host limit could starve the Sentry of threads and crash the sandbox.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import signal
import subprocess
from dataclasses import replace
from pathlib import Path
from typing import Any, Literal

from hangar.domain.errors import InternalError, RuntimeClientError
from hangar.sandbox.base import OUTBOUND_DIR, Limits, SandboxSpec, Template, TemplateUnsafe
from hangar.sandbox.gvisor import host, oci
from hangar.sandbox.namespace import image_root, network, rootfs
from hangar.sandbox.namespace.backend import DEFAULT_LEASE_DIR, NamespaceBackend, NamespaceSandbox
from hangar.sandbox.namespace.cgroups import Cgroup, CgroupLayout
from hangar.sandbox.namespace.launcher import JOIN_CGROUPS
from hangar.sandbox.state import StateDir, list_states
from hangar.sandbox.supervised import READY_TIMEOUT_S, agent_environment, outbound_options, spawn, tail, wait_exit

log = logging.getLogger(__name__)
ENTRY = Path(__file__).with_name("entry.py")
COLD_REASON = "gVisor sandboxes start cold: the gvisor backend has no warm templates"
# Host tasks gVisor needs beyond the guest's: the Sentry's and Gofer's Go threads and runsc itself (a few dozen),
# plus (ptrace platform) about ten host tasks per guest task, measured: its stub process, stub threads for the
# Sentry threads that drive it, and the Sentry threads themselves (which Go keeps once started).
HOST_PIDS_BASE = 256
HOST_PIDS_PER_GUEST = 16
# The Sentry's own memory (page tables, Go heap, file caches) on top of what the guest may use.
HOST_MEMORY_OVERHEAD = 96 << 20


def host_limits(limits: Limits) -> Limits:
    """The host cgroup's limits for a sandbox whose guest gets ``limits`` (the guest's pids are capped inside)."""
    return replace(
        limits,
        pids=HOST_PIDS_BASE + HOST_PIDS_PER_GUEST * limits.pids,
        memory_bytes=limits.memory_bytes + HOST_MEMORY_OVERHEAD,
    )


class GVisorSandbox(NamespaceSandbox):
    def _ask_to_exit(self) -> None:
        """SIGTERM ``runsc run``: it forwards the signal to the supervisor, which gives the agent its grace."""
        with contextlib.suppress(ProcessLookupError):
            self.proc.send_signal(signal.SIGTERM)

    async def _release(self) -> None:
        hide_sockets(self.state)
        await super()._release()


def hide_sockets(state: StateDir) -> None:
    for path in (state.agent_socket, state.control_socket):
        host.hide_socket(path)


class GVisorBackend(NamespaceBackend):
    name = "gvisor"
    isolates = True
    supports_templates = False

    def __init__(
        self,
        state_root: Path,
        tag: str,
        lease_dir: Path = DEFAULT_LEASE_DIR,
        layout: CgroupLayout | None = None,
        egress: Literal["allow", "deny"] = "deny",
        runsc: str = "runsc",
        platform: str = "ptrace",
    ) -> None:
        super().__init__(state_root, tag, lease_dir, layout, egress)
        self.runsc = host.runsc_path(runsc) or runsc
        self.platform = platform

    async def start_template(self, spec: SandboxSpec) -> Template:
        raise TemplateUnsafe(COLD_REASON)

    def inside_files(self) -> Path:
        """The namespace backend's in-sandbox programs plus ``entry.py``."""
        inside = super().inside_files()
        copy = inside / ENTRY.name
        data = ENTRY.read_bytes()
        if not copy.exists() or copy.read_bytes() != data:
            tmp = copy.with_suffix(f".{os.getpid()}.tmp")
            tmp.write_bytes(data)
            tmp.chmod(0o644)
            tmp.replace(copy)
        return inside

    def sandbox_of_peer(self, pid: int, uid: int) -> str | None:
        """gVisor's Gofer (root) makes the sandbox's host connections, so the uid says nothing: the peer's cgroup,
        which runsc and everything it starts inherit, names the sandbox."""
        prefix = f"hangar-{self.tag}-"
        try:
            lines = Path(f"/proc/{pid}/cgroup").read_text().splitlines()
        except OSError:
            return None
        for line in lines:
            name = line.rsplit("/", 1)[-1]
            if name.startswith(prefix) and name[len(prefix) :] in self._live:
                return name[len(prefix) :]
        return None

    async def start(self, spec: SandboxSpec) -> GVisorSandbox:
        state, uid, cgroup = await self.prepare(replace(spec, limits=host_limits(spec.limits)))
        link: network.Link | None = None
        sandbox: GVisorSandbox | None = None
        fifo = -1
        try:
            link = await self.plan_link(spec, uid)
            if link is not None:
                await asyncio.to_thread(network.create, link)
            fifo = _exchange(state)
            proc = self._launch_gvisor(spec, state, uid, cgroup, link)
            sandbox = GVisorSandbox(spec, state, proc, self._live.discard, uid, cgroup, self.leases, link)
            await _wait_ready(state, proc, fifo)
            for name in ("agent.sock", "control.sock"):
                host.expose_socket(_socket_dir(state) / name, state.run / name)
            return sandbox
        except host.SocketSwapped as exc:
            assert sandbox is not None
            await sandbox.stop()
            raise RuntimeClientError(f"The sandbox tampered with its sockets: {exc}") from exc
        except BaseException:
            if sandbox is not None:
                await sandbox.stop()
            else:
                await self.release(spec.sandbox_id, state, cgroup, uid, link)
            raise
        finally:
            if fifo >= 0:
                os.close(fifo)

    def _launch_gvisor(
        self, spec: SandboxSpec, state: StateDir, uid: int, cgroup: Cgroup, link: network.Link | None
    ) -> subprocess.Popen[bytes]:
        bundle = state.path / "bundle"
        bundle.mkdir(mode=0o700)
        config = self._config(spec, state, uid, link)
        fd = os.open(bundle / "config.json", os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)  # it holds the environment
        with os.fdopen(fd, "w") as out:
            json.dump(config, out)
        argv = [
            "/bin/sh",
            "-c",
            JOIN_CGROUPS,
            "hangar-launch",
            str(len(cgroup.procs_files())),
            *cgroup.procs_files(),
            # runsc takes over the network namespace it runs in: the sandbox's own, with its veth and egress rules.
            *(["nsenter", f"--net={link.netns_path}"] if link is not None else []),
            self.runsc,
            f"--root={state.path / 'runsc'}",
            f"--platform={self.platform}",
            # With egress, runsc runs in the sandbox's prepared network namespace and uses it as its "host" network
            # (its veth, NAT and firewall rules): Debian 12's runsc cannot take the netns over with --network=sandbox
            # on kernels where every netns has /proc/sys/net/core/rmem_default (it then believes it is the host's).
            f"--network={'host' if link is not None else 'none'}",
            "--host-uds=all",  # the sandbox binds its own sockets and connects to the outbound ones
            "--host-fifo=open",  # the ready FIFO
            "--ignore-cgroups",  # already inside the sandbox's cgroup, which the host manages
            "--overlay2=none",  # writes go to the session's size-capped tmpfs (and image overlay), not Sentry memory
            "run",
            f"--bundle={bundle}",
            spec.sandbox_id,
        ]
        # SAFETY: root starts runsc inside the sandbox's cgroup; runsc confines the agent in gVisor (its Sentry runs
        # unprivileged under seccomp); the config holds the agent's environment and is root's alone.
        return spawn(argv, {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin"}, Path("/"), state.log)

    def _config(self, spec: SandboxSpec, state: StateDir, uid: int, link: network.Link | None) -> dict[str, Any]:
        etc = rootfs.write_etc(state, spec.outbound.hosts if spec.outbound else ())
        inside = self.inside_files()
        exchange = oci.exchange_mounts(_socket_dir(state), _fifo_dir(state))
        if spec.rootfs is None:
            _own_passwd(etc, uid)
            root = state.path / "gvroot"
            oci.make_code_root(root)
            mounts = oci.code_mounts(
                etc, state.home, state.tmp, spec.code_dir, spec.env_dir, inside, spec.limits.disk_bytes
            )
            env = agent_environment(spec, spec.agent_port, rootfs.HOME, "/tmp")
            python: tuple[str, ...] = (str(spec.env_dir / "bin" / "python"),)
            ids, cwd, readonly = (uid, uid), str(spec.code_dir), True
            inside_dir = rootfs.INSIDE_DIR
        else:
            try:
                user = image_root.resolve_user(spec.rootfs, spec.user)
                root = image_root.mount_root(state, spec.rootfs, uid, spec.workdir, spec.outbound)
                python = image_root.host_interpreter()
            except image_root.ImageError as exc:
                raise RuntimeClientError(f"The image cannot run: {exc}") from exc
            inside_dir = f"{image_root.HIDDEN}/inside"
            # /tmp bound explicitly: runsc would otherwise put a tmpfs there, in Sentry memory and outside the cap.
            mounts = [oci.shm(spec.limits.disk_bytes), oci.bind(root / "tmp", "/tmp", oci.RW)]
            mounts += [oci.bind(etc / name, f"/etc/{name}", oci.RO) for name in ("hosts", "hostname")]
            if os.path.exists("/etc/resolv.conf"):
                mounts.append(oci.bind("/etc/resolv.conf", "/etc/resolv.conf", oci.RO))
            mounts += [oci.bind("/usr", image_root.HOST_USR, oci.RO), oci.bind(inside, inside_dir, oci.RO)]
            env = agent_environment(spec, spec.agent_port, user.home, "/tmp")
            ids, cwd, readonly = (user.uid, user.gid), spec.workdir or "/", False
        argv = [
            *python,
            "-I",
            "-B",
            f"{inside_dir}/{ENTRY.name}",
            f"{oci.EXCHANGE_DIR}/sock",
            f"{oci.EXCHANGE_DIR}/in/ready",
            f"{inside_dir}/supervisor.py",
            f"--port={spec.agent_port}",
            *outbound_options(spec, OUTBOUND_DIR),
            "--",
            *spec.command,
        ]
        # SAFETY: hands the sandbox's user (inside ids) its own fresh, empty socket directory in its state dir.
        os.chown(_socket_dir(state), ids[0], ids[1])
        caps = oci.IMAGE_ROOT_CAPS if spec.rootfs is not None and ids[0] == 0 else ()
        process = oci.Process(ids[0], ids[1], argv, env, cwd, spec.limits.pids, caps)
        mounts += [*exchange, *oci.outbound_mount(spec.outbound)]
        return oci.runtime_spec(
            root=root, readonly_root=readonly, process=process, mounts=mounts, own_network=link is None
        )

    async def cleanup_orphans(self) -> int:
        for state in list_states(self.state_root):
            if state.sandbox_id not in self._live:
                hide_sockets(state)
        return await super().cleanup_orphans()


def _socket_dir(state: StateDir) -> Path:
    return state.path / "sockets"


def _fifo_dir(state: StateDir) -> Path:
    return state.path / "ready"


def _exchange(state: StateDir) -> int:
    """The sandbox's socket dir (its own) and the ready FIFO (root's, writable by all in a root-only dir); returns the
    FIFO opened for reading (read-write, so that it never reads end-of-file before the sandbox opened it)."""
    sockets, fifo_dir = _socket_dir(state), _fifo_dir(state)
    sockets.mkdir(mode=0o700)  # handed to the sandbox's user by ``_config``, which knows who that is
    fifo_dir.mkdir(mode=0o755)
    os.mkfifo(fifo_dir / "ready", 0o600)
    os.chmod(fifo_dir / "ready", 0o622)
    return os.open(fifo_dir / "ready", os.O_RDWR | os.O_NONBLOCK | os.O_CLOEXEC)


def _own_passwd(etc: Path, uid: int) -> None:
    """The sandbox's user is its leased uid inside gVisor too (files it writes through the Gofer belong to it)."""
    (etc / "passwd").write_text(
        f"root:x:0:0:root:/root:/usr/sbin/nologin\nagent:x:{uid}:{uid}:agent:{rootfs.HOME}:/bin/sh\n"
        "nobody:x:65534:65534:nobody:/nonexistent:/usr/sbin/nologin\n"
    )
    (etc / "group").write_text(f"root:x:0:\nagent:x:{uid}:\nnogroup:x:65534:\n")


async def _wait_ready(state: StateDir, proc: subprocess.Popen[bytes], fifo: int) -> None:
    """The supervisor's ready byte on the FIFO, or the launch's end (runsc failed), or the timeout."""
    loop = asyncio.get_running_loop()
    said: asyncio.Future[bytes] = loop.create_future()

    def readable() -> None:
        with contextlib.suppress(BlockingIOError):
            data = os.read(fifo, 1)
            if data and not said.done():
                said.set_result(data)

    loop.add_reader(fifo, readable)
    ended = asyncio.ensure_future(wait_exit(proc, READY_TIMEOUT_S))
    try:
        either: list[asyncio.Future[Any]] = [said, ended]
        await asyncio.wait(either, timeout=READY_TIMEOUT_S, return_when=asyncio.FIRST_COMPLETED)
    finally:
        loop.remove_reader(fifo)
        ended.cancel()
        with contextlib.suppress(BaseException):
            await ended
    if said.done() and said.result() == b"1":
        return
    said.cancel()
    if proc.poll() is None:
        raise InternalError(
            f"sandbox {state.sandbox_id} did not start within {READY_TIMEOUT_S:.0f}s: {tail(state.log)}"
        )
    raise InternalError(f"sandbox {state.sandbox_id} failed to start ({proc.returncode}): {tail(state.log)}")
