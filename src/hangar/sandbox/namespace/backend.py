"""The ``namespace`` backend: bubblewrap namespaces + cgroup limits + seccomp, one unprivileged host uid each.

Everything a sandbox owns is named after it: the state dir ``<state_root>/<sandbox_id>``, the cgroup
``hangar-<tag>-<sandbox_id>`` and the uid lease, so ``cleanup_orphans`` needs nothing from memory.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import shutil
import signal
import subprocess
import threading
import uuid
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Literal

from hangar.domain.errors import RuntimeClientError
from hangar.sandbox.base import OUTBOUND_DIR, SandboxBackend, SandboxSpec, SandboxStats, Template
from hangar.sandbox.namespace import forking, image_root, network, rootfs, seccomp, templates
from hangar.sandbox.namespace.cgroups import Cgroup, CgroupLayout, detect, list_names
from hangar.sandbox.namespace.launcher import data_fd, fill, launch_argv
from hangar.sandbox.namespace.uids import UidLeases
from hangar.sandbox.state import StateDir, create_state, list_states
from hangar.sandbox.supervised import (
    INSIDE_PROGRAMS,
    Channels,
    ProcessHandle,
    SupervisedSandbox,
    agent_environment,
    spawn,
    supervisor_argv,
    wait_exit,
    wait_ready,
)

log = logging.getLogger(__name__)
DEFAULT_LEASE_DIR = Path("/run/hangar/uids")


class NamespaceSandbox(SupervisedSandbox):
    def __init__(
        self,
        spec: SandboxSpec,
        state: StateDir,
        proc: ProcessHandle,
        forget: Callable[[str], None],
        uid: int,
        cgroup: Cgroup,
        leases: UidLeases,
        link: network.Link | None,
    ) -> None:
        super().__init__(spec, state, proc, forget)
        self.uid = uid  # the host uid the sandbox runs as
        self.cgroup = cgroup
        self.leases = leases
        self.link = link  # its network namespace with egress, or None (no network but lo)

    async def stats(self) -> SandboxStats:
        return SandboxStats(
            memory_bytes=self.cgroup.memory_bytes(),
            pids=self.cgroup.pid_count(),
            cpu_seconds=self.cgroup.cpu_seconds(),
        )

    def _ask_to_exit(self) -> None:
        """SIGTERM everything but bwrap: bwrap would die at once and take the namespace with it (--die-with-parent),
        whereas the supervisor and the agent get their grace this way."""
        self.cgroup.signal_all(signal.SIGTERM, spare="bwrap")

    async def _kill_tree(self) -> None:
        await self.cgroup.kill_all()

    async def _release(self) -> None:
        await _remove(self.id, self.state, self.cgroup, self.leases, self.uid, _names(self.link))


async def _remove(
    sandbox_id: str,
    state: StateDir | None,
    cgroup: Cgroup | None,
    leases: UidLeases,
    uid: int | None,
    netns: tuple[str, str] | None,
) -> None:
    """Undo a sandbox in reverse order of creation; every step tolerates what is already gone."""
    if cgroup is not None:
        await cgroup.kill_all()
        await cgroup.remove()
    if netns is not None:
        await asyncio.to_thread(network.delete, *netns)
    if state is not None:
        rootfs.unmount_writable(state)
        state.remove()
    if uid is not None:
        leases.release(uid, sandbox_id)


def _names(link: network.Link | None) -> tuple[str, str] | None:
    return (link.netns, link.host_if) if link else None


class NamespaceBackend(SandboxBackend):
    name = "namespace"
    isolates = True
    supports_templates = True

    def __init__(
        self,
        state_root: Path,
        tag: str,
        lease_dir: Path = DEFAULT_LEASE_DIR,
        layout: CgroupLayout | None = None,
        egress: Literal["allow", "deny"] = "deny",
    ) -> None:
        found = layout or detect()
        if found is None:
            raise RuntimeError("no usable cgroup controllers for the namespace backend")
        self.state_root = state_root
        self.tag = tag
        self.layout = found
        self.leases = UidLeases(lease_dir, tag)
        self.egress = egress
        self._firewall_installed = False
        self._firewall_lock = threading.Lock()  # concurrent starts connect in worker threads
        self.setpriv = shutil.which("setpriv") or "setpriv"
        self.bwrap = shutil.which("bwrap") or "bwrap"
        self._live: set[str] = set()

    def cgroup(self, sandbox_id: str) -> Cgroup:
        return Cgroup(self.layout, f"hangar-{self.tag}-{sandbox_id}")

    def inside_files(self) -> Path:
        """Root-owned, world-readable copies of the in-sandbox programs the sandbox uid can read (the install may be
        0700): supervisor.py, isolate.py and zygote.py, bound read-only under /opt/hangar."""
        inside = self.state_root / ".inside"  # a dot: never mistaken for a sandbox's state dir
        inside.mkdir(mode=0o755, exist_ok=True)
        for source in INSIDE_PROGRAMS:
            copy = inside / source.name
            data = source.read_bytes()
            if not copy.exists() or copy.read_bytes() != data:
                tmp = copy.with_suffix(f".{os.getpid()}.tmp")
                tmp.write_bytes(data)
                tmp.chmod(0o644)
                tmp.replace(copy)
        return inside

    def outbound_dir(self) -> Path:
        """``<state_root>/.outbound``: root-owned, 0755 (sandboxes connect to its sockets, write nothing)."""
        path = self.state_root / ".outbound"  # a dot: never mistaken for a sandbox's state dir
        path.mkdir(mode=0o755, parents=True, exist_ok=True)
        self.state_root.chmod(0o711)
        return path

    def sandbox_of_peer(self, pid: int, uid: int) -> str | None:
        """Each sandbox runs as its own leased host uid, so the uid alone names it (the pid is not needed)."""
        sandbox_id = self.leases.holder(uid)
        return sandbox_id if sandbox_id in self._live else None

    async def prepare(self, spec: SandboxSpec, writable_bytes: int | None = None) -> tuple[StateDir, int, Cgroup]:
        """State dir, uid lease, cgroup with its limits and the size-capped writable tmpfs (undone by ``release``).

        ``writable_bytes``: the tmpfs's size when it holds less than home, /tmp and the log (a fork's log only)."""
        state = create_state(self.state_root, spec.sandbox_id)
        self.state_root.chmod(0o711)
        self._live.add(spec.sandbox_id)
        uid: int | None = None
        cgroup: Cgroup | None = None
        try:
            uid = self.leases.acquire(spec.sandbox_id)
            cgroup = self.cgroup(spec.sandbox_id)
            state.write_record(backend=self.name, tag=self.tag, uid=uid, cgroup=cgroup.name)
            rootfs.mount_writable(state, writable_bytes or spec.limits.disk_bytes, uid)
            cgroup.create(spec.limits)
        except BaseException:
            self._live.discard(spec.sandbox_id)
            await _remove(spec.sandbox_id, state, cgroup, self.leases, uid, None)
            raise
        return state, uid, cgroup

    async def release(
        self, sandbox_id: str, state: StateDir, cgroup: Cgroup, uid: int, link: network.Link | None
    ) -> None:
        self._live.discard(sandbox_id)
        await _remove(sandbox_id, state, cgroup, self.leases, uid, _names(link))

    async def start_template(self, spec: SandboxSpec) -> Template:
        template = await templates.start_template(self, spec)
        self._refill(template)  # the first session already finds its fork prepared
        return template

    async def fork(self, template: Template, spec: SandboxSpec) -> NamespaceSandbox:
        """Use the template's prepared fork when it fits ``spec`` (its own sandbox id), else prepare one now; then
        prepare the next one in the background."""
        if not isinstance(template, templates.NamespaceTemplate):
            raise TypeError(f"not a namespace template: {template!r}")
        prepared = await self._take_spare(template, spec)
        if prepared is None:
            prepared = await forking.prepare_fork(self, template, spec)
        sandbox: NamespaceSandbox | None = None
        try:
            proc = forking.finish_fork(prepared)
            template.forks += 1
            sandbox = self._sandbox(prepared.spec, prepared.state, proc, prepared.uid, prepared.cgroup, prepared.link)
            await self._ready(sandbox, prepared.channels)
            return sandbox
        except BaseException:
            if sandbox is None:
                await forking.discard(self, prepared)
            raise
        finally:
            self._refill(template)  # after this session is up: the next one's preparation never competes with it

    async def _take_spare(
        self, template: templates.NamespaceTemplate, spec: SandboxSpec
    ) -> forking.PreparedFork | None:
        spare, template.spare = template.spare, None
        if spare is None:
            return None
        if spare.alive() and replace(spec, sandbox_id=spare.spec.sandbox_id) == spare.spec:
            return spare
        await forking.discard(self, spare)
        return None

    def _refill(self, template: templates.NamespaceTemplate) -> None:
        """Prepare the template's next fork beside the request path (one at a time)."""
        if template.refill is not None or template.spare is not None or not template.alive():
            return

        async def refill() -> None:
            spec = replace(template.spec, sandbox_id=f"hs-{uuid.uuid4().hex[:24]}")
            try:
                prepared = await forking.prepare_fork(self, template, spec)
            except Exception as exc:
                log.warning("preparing a fork of template %s failed: %s", template.id, exc)
                return
            finally:
                template.refill = None
            if template.alive() and template.spare is None:
                template.spare = prepared
            else:
                await forking.discard(self, prepared)

        template.refill = asyncio.create_task(refill(), name=f"refill-{template.id}")

    async def retire_template(self, template: templates.NamespaceTemplate) -> None:
        """The zygote was told to exit: drop its prepared fork, wait until its pid 1 ends (after the last session
        forked from it), then remove the template's cgroup, files and uid lease."""
        if template.refill is not None:  # bounded by the fork steps' timeouts; cancelling it could cut its cleanup
            with contextlib.suppress(BaseException):
                await template.refill
        if template.spare is not None:
            spare, template.spare = template.spare, None
            await forking.discard(self, spare)
        async with template.lock:  # a fork conversation in progress finishes on an open socket
            template.control.close()  # the zygote reads EOF and exits
        try:
            while not await wait_exit(template.proc, 3600.0):
                pass
        finally:
            await self.release(template.id, template.state, template.cgroup, template.uid, None)

    def _sandbox(
        self,
        spec: SandboxSpec,
        state: StateDir,
        proc: ProcessHandle,
        uid: int,
        cgroup: Cgroup,
        link: network.Link | None,
    ) -> NamespaceSandbox:
        return NamespaceSandbox(spec, state, proc, self._live.discard, uid, cgroup, self.leases, link)

    async def _ready(self, sandbox: NamespaceSandbox, channels: Channels) -> None:
        """Wait for the sandbox's ready byte; a sandbox that does not get there is stopped (undoing everything)."""
        try:
            await wait_ready(sandbox.state, sandbox.proc, channels)
        except BaseException:
            await sandbox.stop()
            raise
        finally:
            channels.close()

    async def plan_link(self, spec: SandboxSpec, uid: int) -> network.Link | None:
        """The sandbox's veth plan when it gets egress (firewall installed once); None for loopback only."""
        if spec.network != "public" or self.egress != "allow":
            return None
        await asyncio.to_thread(self._install_firewall)
        return network.plan(self.tag, spec.sandbox_id, uid - self.leases.first)

    async def start(self, spec: SandboxSpec) -> NamespaceSandbox:
        """A cold start: bwrap builds the namespaces and root view, then the supervisor starts the agent."""
        state, uid, cgroup = await self.prepare(spec)
        link: network.Link | None = None
        sandbox: NamespaceSandbox | None = None
        try:
            link = await self.plan_link(spec, uid)
            if link is not None:
                await asyncio.to_thread(network.create, link)
            channels = Channels.open(state)
            try:
                proc = self._launch(spec, state, uid, cgroup, channels, link)
            except BaseException:
                channels.close()
                raise
            sandbox = self._sandbox(spec, state, proc, uid, cgroup, link)
            await self._ready(sandbox, channels)
            return sandbox
        except BaseException:
            if sandbox is None:  # otherwise its stop() already undid everything
                await self.release(spec.sandbox_id, state, cgroup, uid, link)
            raise

    def _install_firewall(self) -> None:
        with self._firewall_lock:
            if not self._firewall_installed:
                network.install_firewall()
                self._firewall_installed = True

    def _launch(
        self,
        spec: SandboxSpec,
        state: StateDir,
        uid: int,
        cgroup: Cgroup,
        channels: Channels,
        link: network.Link | None,
    ) -> subprocess.Popen[bytes]:
        etc = rootfs.write_etc(state, spec.outbound.hosts if spec.outbound else ())
        if spec.rootfs is None:
            inside_ids = (rootfs.SANDBOX_UID, rootfs.SANDBOX_UID)
            env = agent_environment(spec, spec.agent_port, rootfs.HOME, "/tmp")
            mounts = rootfs.bwrap_mounts(
                state, etc, spec.code_dir, spec.env_dir, self.inside_files(), spec.limits.disk_bytes, spec.outbound
            )
            chdir, supervisor, python = str(spec.code_dir), rootfs.SUPERVISOR_PATH, ()
        else:
            try:
                user = image_root.resolve_user(spec.rootfs, spec.user)
                merged = image_root.mount_root(state, spec.rootfs, uid, spec.workdir, spec.outbound)
                python = image_root.host_interpreter()
            except image_root.ImageError as exc:
                raise RuntimeClientError(f"The image cannot run: {exc}") from exc
            inside_ids = (user.uid, user.gid)
            env = agent_environment(spec, spec.agent_port, user.home, "/tmp")
            mounts = image_root.image_mounts(merged, etc, self.inside_files(), spec.limits.disk_bytes, spec.outbound)
            chdir, supervisor = image_root.normalized(spec.workdir), image_root.SUPERVISOR_PATH
        filter_fd = data_fd("hangar-seccomp", seccomp.compile_bpf())
        args_fd = data_fd("hangar-bwrap-args")
        try:
            argv, bwrap_args = launch_argv(
                setpriv=self.setpriv,
                bwrap=self.bwrap,
                uid=uid,
                procs_files=cgroup.procs_files(),
                seccomp_fd=filter_fd,
                sandbox_uid=inside_ids[0],
                sandbox_gid=inside_ids[1],
                hostname=rootfs.HOSTNAME,
                mounts=mounts,
                environment=env,
                chdir=chdir,
                command=supervisor_argv(spec, supervisor, channels, spec.agent_port, OUTBOUND_DIR, python),
                args_fd=args_fd,
                netns=str(link.netns_path) if link else None,
            )
            fill(args_fd, bwrap_args)
            # The launcher gets a bare PATH only: bwrap --clearenv then sets the agent's environment.
            fds = (filter_fd, args_fd, *channels.child_fds())
            # SAFETY: root starts the launcher; it joins the sandbox's cgroups, then setpriv drops to the leased uid
            # with no capabilities and no_new_privs before bwrap runs; only the seccomp and argument memfds and the
            # supervisor's fds are passed down.
            return spawn(argv, {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin"}, Path("/"), state.log, fds)
        finally:
            os.close(filter_fd)
            os.close(args_fd)
            channels.close_child_ends()

    async def cleanup_orphans(self) -> int:
        """Remove every sandbox of this installation (tag) that this backend object did not start."""
        orphans: set[str] = set()
        for state in list_states(self.state_root):
            if state.sandbox_id in self._live:
                continue
            orphans.add(state.sandbox_id)
            uid = state.read_record().get("uid")
            await _remove(
                state.sandbox_id,
                state,
                self.cgroup(state.sandbox_id),
                self.leases,
                uid if isinstance(uid, int) else None,
                network.names(self.tag, state.sandbox_id),
            )
        prefix = f"hangar-{self.tag}-"
        for name in list_names(self.layout, prefix):
            sandbox_id = name[len(prefix) :]
            if sandbox_id not in self._live:
                orphans.add(sandbox_id)
                await _remove(sandbox_id, None, Cgroup(self.layout, name), self.leases, None, None)
        for name in network.list_netns(prefix):
            sandbox_id = name[len(prefix) :]
            if sandbox_id not in self._live:
                orphans.add(sandbox_id)
                await _remove(sandbox_id, None, None, self.leases, None, network.names(self.tag, sandbox_id))
        for uid, sandbox_id in self.leases.owned().items():
            if sandbox_id not in self._live:
                orphans.add(sandbox_id)
                self.leases.release(uid, sandbox_id)
        if orphans:
            log.warning("removed %d orphaned sandboxes of a previous Hangar process", len(orphans))
        return len(orphans)
