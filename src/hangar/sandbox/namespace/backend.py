"""The ``namespace`` backend: bubblewrap namespaces + cgroup limits + seccomp, one unprivileged host uid each.

A thin composition: ``SessionResources`` (``resources.py``) acquires and releases what every sandbox holds (state
dir, uid lease, cgroup, writable tmpfs, veth), this module cold-starts a session with bwrap, and a
``NamespaceTemplate`` (``templates.py``) owns each warm template and the fork it keeps prepared; ``fork`` only
takes that fork from the template, starts it and waits for the agent.
"""

from __future__ import annotations

import asyncio
import logging
import os
import shutil
import signal
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Literal

from hangar.domain.errors import RuntimeClientError
from hangar.sandbox.base import OUTBOUND_DIR, SandboxBackend, SandboxSpec, SandboxStats, Template
from hangar.sandbox.namespace import image_root, network, rootfs, seccomp, storage
from hangar.sandbox.namespace.cgroups import Cgroup, CgroupLayout, detect
from hangar.sandbox.namespace.launcher import data_fd, fill, launch_argv
from hangar.sandbox.namespace.resources import SessionResources, names, remove, settle
from hangar.sandbox.namespace.templates import NamespaceTemplate
from hangar.sandbox.namespace.uids import UidLeases
from hangar.sandbox.state import StateDir
from hangar.sandbox.supervised import (
    Channels,
    ProcessHandle,
    SupervisedSandbox,
    agent_environment,
    spawn,
    supervisor_argv,
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
        await remove(self.id, self.state, self.cgroup, self.leases, self.uid, names(self.link))


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
        self.egress = egress
        self.resources = SessionResources(self.name, state_root, tag, found, UidLeases(lease_dir, tag), egress)
        self.leases = self.resources.leases
        self._live = self.resources.live  # the same set: sandboxes forget themselves from it when they stop
        self.setpriv = shutil.which("setpriv") or "setpriv"
        self.bwrap = shutil.which("bwrap") or "bwrap"

    def cgroup(self, sandbox_id: str) -> Cgroup:
        return self.resources.cgroup(sandbox_id)

    def inside_files(self) -> Path:
        """The in-sandbox programs, readable by every sandbox uid (``SessionResources.inside_files``)."""
        return self.resources.inside_files()

    def outbound_dir(self) -> Path:
        """``<state_root>/.outbound``: root-owned, 0755 (sandboxes connect to its sockets, write nothing)."""
        path = self.state_root / ".outbound"  # a dot: never mistaken for a sandbox's state dir
        path.mkdir(mode=0o755, parents=True, exist_ok=True)
        self.state_root.chmod(0o711)
        return path

    def sandbox_of_peer(self, pid: int, uid: int) -> str | None:
        """Each sandbox runs as its own leased host uid, so the uid alone names it (the pid is not needed)."""
        return self.resources.holder(uid)

    async def prepare(self, spec: SandboxSpec, writable_bytes: int | None = None) -> tuple[StateDir, int, Cgroup]:
        """A cold start's host resources (``SessionResources.acquire``; undone by ``release``)."""
        return await self.resources.acquire(spec, writable_bytes)

    async def release(
        self, sandbox_id: str, state: StateDir, cgroup: Cgroup, uid: int, link: network.Link | None
    ) -> None:
        await self.resources.release(sandbox_id, state, cgroup, uid, link)

    async def plan_link(self, spec: SandboxSpec, uid: int) -> network.Link | None:
        return await self.resources.plan_link(spec, uid)

    async def start_template(self, spec: SandboxSpec) -> Template:
        return await NamespaceTemplate.start(spec, self.resources, self.bwrap)

    async def fork(self, template: Template, spec: SandboxSpec) -> NamespaceSandbox:
        """A session from the template's prepared fork (or one prepared now); the template prepares the next one
        once this session is up, so that preparation never competes with it."""
        if not isinstance(template, NamespaceTemplate):
            raise TypeError(f"not a namespace template: {template!r}")
        prepared = await template.take_fork(spec)
        sandbox: NamespaceSandbox | None = None
        try:
            storage.attach_to_fork(self.state_root, spec, prepared.spec.sandbox_id, prepared.uid, prepared.process.pid)
            proc = template.begin_session(prepared)
            sandbox = self._sandbox(prepared.spec, prepared.state, proc, prepared.uid, prepared.cgroup, prepared.link)
            await self._ready(sandbox, prepared.channels)
            return sandbox
        except BaseException:
            if sandbox is None:
                await prepared.discard(self.resources)
            raise
        finally:
            template.prepare_next()

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

    async def _ready(self, sandbox: NamespaceSandbox, channels: Channels, cold: bool = False) -> None:
        """Wait for the sandbox's ready byte; a sandbox that does not get there is stopped (undoing everything).
        A cold sandbox keeps the pipe: its supervisor says when the agent listens (``until_listening``)."""
        try:
            await wait_ready(sandbox.state, sandbox.proc, channels)
            if cold:
                sandbox.watch_listening(channels.take_ready())
        except BaseException:
            await sandbox.stop()
            raise
        finally:
            channels.close()

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
            await self._ready(sandbox, channels, cold=True)
            return sandbox
        except BaseException:
            if sandbox is None:  # otherwise its stop() already undid everything
                await self.release(spec.sandbox_id, state, cgroup, uid, link)
            raise

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
        python: tuple[str, ...] = ()  # the host interpreter an image's supervisor runs on; code uses the env's
        if spec.rootfs is None:
            inside_ids = (rootfs.SANDBOX_UID, rootfs.SANDBOX_UID)
            env = agent_environment(spec, spec.agent_port, rootfs.HOME, "/tmp")
            mounts = rootfs.bwrap_mounts(
                state,
                etc,
                spec.code_dir,
                spec.env_dir,
                self.inside_files(),
                spec.limits.disk_bytes,
                spec.outbound,
                extra=storage.cold_mounts(state, spec, uid),
            )
            chdir, supervisor = str(spec.code_dir), rootfs.SUPERVISOR_PATH
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
            mounts += storage.cold_mounts(state, spec, uid, merged)
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

    async def settle(self) -> None:
        await settle()

    async def cleanup_orphans(self) -> int:
        """Remove every sandbox of this installation (tag) that this backend object did not start."""
        return await self.resources.cleanup_orphans()
