"""The ``namespace`` backend: bubblewrap namespaces + cgroup limits + seccomp, one unprivileged host uid each.

A thin composition: ``SessionResources`` (``resources.py``) acquires and releases what every sandbox holds (state
dir, uid lease, cgroup, writable tmpfs, veth), this module cold-starts a session with bwrap, and a
``NamespaceTemplate`` (``templates.py``) owns each warm template and the fork it keeps prepared; ``fork`` only
takes that fork from the template, starts it and waits for the agent.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import py_compile
import shutil
import signal
import subprocess
import threading
import weakref
from collections.abc import Callable
from pathlib import Path
from typing import Literal

from hangar.domain.errors import RuntimeClientError
from hangar.observability import tracing
from hangar.sandbox.base import OUTBOUND_DIR, SandboxBackend, SandboxSpec, SandboxStats, Template
from hangar.sandbox.namespace import bytecode, image_root, network, rootfs, seccomp, storage
from hangar.sandbox.namespace.cgroups import Cgroup, CgroupLayout, detect
from hangar.sandbox.namespace.launch_ns import HOST_NS, LaunchNamespace
from hangar.sandbox.namespace.launcher import bwrap_arguments, data_fd, fill, launcher_argv, spawn_launcher
from hangar.sandbox.namespace.resources import SessionResources, names, remove, settle
from hangar.sandbox.namespace.templates import NamespaceTemplate
from hangar.sandbox.namespace.uids import UidLeases
from hangar.sandbox.state import StateDir
from hangar.sandbox.supervised import (
    INSIDE_PROGRAMS,
    Channels,
    ProcessHandle,
    SupervisedSandbox,
    agent_environment,
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
        # Cold launches run from a mount namespace without any sandbox's mounts (``launch_ns``); None: the host's.
        self.launch_ns: LaunchNamespace | None = LaunchNamespace([state_root])
        self._inside: Path | None = None  # ``inside_files``, once copied
        self.compiled_programs = True  # a code sandbox's programs run from their bytecode (``bytecode.py``)
        self._bytecode: Path | None = None  # ``bytecode.compiled`` of ``inside_files``, once made
        self._bytecode_lock = threading.Lock()  # concurrent first cold starts make it once, not each in turn
        self.shared_etc = True  # cold sandboxes of the same /etc content bind one copy (``rootfs.shared_etc``)
        weakref.finalize(self, self.launch_ns.close)

    def cgroup(self, sandbox_id: str) -> Cgroup:
        return self.resources.cgroup(sandbox_id)

    def inside_files(self) -> Path:
        """The in-sandbox programs, readable by every sandbox uid (``SessionResources.inside_files``): copied once
        per backend (they are this server's own code), not read and compared again on every cold launch before its
        gate opens (16 file reads and a mkdir: 2-5 ms of the event loop under load)."""
        if self._inside is None or not (self._inside / "supervisor.py").exists():
            self._inside = self.resources.inside_files()
        return self._inside

    def bytecode(self) -> Path | None:
        """The in-sandbox programs' compiled form (``bytecode.compiled``), made once per backend from the copies of
        ``inside_files`` (from a thread: ``start``); None when switched off or not made."""
        if not self.compiled_programs:
            return None
        with self._bytecode_lock:
            return self._make_bytecode()

    def _make_bytecode(self) -> Path | None:
        if self.compiled_programs and (self._bytecode is None or not self._bytecode.is_dir()):
            inside = self.inside_files()
            programs = [inside / program.name for program in INSIDE_PROGRAMS]
            try:
                self._bytecode = bytecode.compiled(self.state_root / ".bytecode", programs, rootfs.INSIDE_DIR)
            except (OSError, SyntaxError, py_compile.PyCompileError) as exc:  # the sources compile inside as before
                log.warning("the in-sandbox programs run from source: %s", exc)
                self.compiled_programs = False
        return self._bytecode

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
        with tracing.phase("hangar.sandbox.take_fork"):  # the prepared one, or one prepared now
            prepared = await template.take_fork(spec)
        sandbox: NamespaceSandbox | None = None
        try:
            with tracing.phase("hangar.sandbox.finish_fork"):  # its session begins: supervisor and agent, ready byte
                storage.attach_to_fork(
                    self.state_root, spec, prepared.spec.sandbox_id, prepared.uid, prepared.process.pid
                )
                proc = template.begin_session(prepared)
                sandbox = self._sandbox(
                    prepared.spec, prepared.state, proc, prepared.uid, prepared.cgroup, prepared.link
                )
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
        A cold sandbox gets its CPU quota now (none until then: the supervisor imports asyncio while the agent it
        spawned starts, and one quota would make the agent wait for it) and keeps the pipe: its supervisor says
        when the agent listens (``until_listening``)."""
        try:
            await wait_ready(sandbox.state, sandbox.proc, channels)
            if cold:
                sandbox.cgroup.set_cpus(sandbox.spec.limits.cpus)  # before anything else may run in it
                sandbox.watch_listening(channels.take_ready())
        except BaseException:
            await sandbox.stop()
            raise
        finally:
            channels.close()

    async def start(self, spec: SandboxSpec) -> NamespaceSandbox:
        """A cold start: bwrap builds the namespaces and root view, then the supervisor starts the agent.

        The launcher is spawned first and joins the sandbox's cgroups (a cgroup v1 migration waits ~5-10 ms for an
        RCU grace period) while this process writes bwrap's arguments and, with egress, a thread makes the network
        namespace and veth; it goes on into the sandbox when both are done (the gate, ``launcher.GATED_JOIN``).
        The CPU quota is lifted until the supervisor's ready byte (``_ready``), before any exec can reach it."""
        if self.launch_ns is not None and not self.launch_ns.settled:
            await asyncio.to_thread(self.launch_ns.ensure)  # once: the launch namespace (``launch_ns``)
        if self.compiled_programs and self._bytecode is None:
            await asyncio.to_thread(self.bytecode)  # once: the supervisor's bytecode, off the event loop
        with tracing.phase("hangar.sandbox.prepare"):  # state dir, uid lease, cgroup
            state, uid, cgroup = await self.prepare(spec)
        link: network.Link | None = None
        sandbox: NamespaceSandbox | None = None
        made: asyncio.Future[None] | None = None
        entered = False  # its state dir is attached in the launch namespace until the supervisor runs
        try:
            cgroup.set_cpus(None)  # the quota applies from the supervisor's ready byte on (``_ready``)
            link = await self.plan_link(spec, uid)
            if link is not None:
                # A to_thread task starts at the next await, after the launch below: the veth is made then, alone,
                # not while the launch's Python code competes with it for the GIL (submitting it at once measured no
                # better: the network wait went 3.1 -> 0.4 ms, the launch itself took longer).
                made = asyncio.ensure_future(asyncio.to_thread(network.create, link))
            channels = Channels.open(state)
            gate = -1
            try:
                with tracing.phase("hangar.sandbox.launch"):  # spawn the gated launcher, /etc, bwrap's arguments
                    proc, gate, mount_ns = self._launch(spec, state, uid, cgroup, channels, link)
                entered = mount_ns != HOST_NS
                sandbox = self._sandbox(spec, state, proc, uid, cgroup, link)
                if made is not None:
                    with tracing.phase("hangar.sandbox.network"):  # what is left of the veth's making
                        await asyncio.shield(made)
                # Its arguments, network and launch namespace are there: the launcher may go on.
                os.write(gate, b"1\n" if self.launch_ns is None else f"1 {mount_ns}\n".encode())
            except BaseException:
                channels.close()
                raise
            finally:
                if gate >= 0:
                    os.close(gate)  # closed unopened, the launcher exits (125) before entering the sandbox
            with tracing.phase("hangar.sandbox.supervisor_ready"):  # launched: until the supervisor's ready byte
                await self._ready(sandbox, channels, cold=True)
            if entered and self.launch_ns is not None:
                entered = False
                self.launch_ns.leave(state.path)
            return sandbox
        except BaseException:
            if entered and self.launch_ns is not None:
                self.launch_ns.leave(state.path)
            if made is not None:
                await _finished(made)  # never undo a namespace a thread is still making
            if sandbox is not None:
                await sandbox.stop()  # idempotent: a failed _ready already stopped it, undoing everything
            else:
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
    ) -> tuple[subprocess.Popen[bytes], int, str]:
        """The gated launcher, spawned before its bwrap arguments are written (it joins the cgroups meanwhile); the
        gate's write end, which the caller opens (``1``) or closes; and the mount namespace it launches from (the
        launch namespace with the state dir attached, or ``HOST_NS``). A failure here kills the launcher."""
        python: tuple[str, ...] = ()  # the host interpreter an image's supervisor runs on; code uses the env's
        supervisor = rootfs.SUPERVISOR_PATH
        if spec.rootfs is not None:
            supervisor = image_root.SUPERVISOR_PATH
            try:
                python = image_root.host_interpreter()
            except image_root.ImageError as exc:
                raise RuntimeClientError(f"The image cannot run: {exc}") from exc
        compiled = self._compiled() if spec.rootfs is None else None
        filter_fd = data_fd("hangar-seccomp", seccomp.compile_bpf())
        args_fd = data_fd("hangar-bwrap-args")
        gate_read, gate = os.pipe()
        proc: subprocess.Popen[bytes] | None = None
        try:
            argv = launcher_argv(
                setpriv=self.setpriv,
                bwrap=self.bwrap,
                uid=uid,
                procs_files=cgroup.procs_files(),
                command=self._supervisor_argv(spec, supervisor, channels, python, compiled),
                args_fd=args_fd,
                netns=str(link.netns_path) if link else None,
                gated=True,
                mount_ns=self.launch_ns is not None,
            )
            # The launcher gets a bare PATH only: bwrap --clearenv then sets the agent's environment.
            fds = (filter_fd, args_fd, *channels.child_fds())
            # SAFETY: root starts the launcher; it joins the sandbox's cgroups, then (past the gate) setpriv drops to
            # the leased uid with no capabilities and no_new_privs before bwrap runs; only the seccomp and argument
            # memfds and the supervisor's fds are passed down (the gate is its stdin until then, then /dev/null).
            proc = spawn_launcher(argv, {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin"}, state.log, fds, gate_read)
            channels.close_child_ends()
            arguments = self._bwrap_arguments(spec, state, uid, filter_fd, link, compiled)
            fill(args_fd, arguments)  # read by bwrap past the gate
            mount_ns = HOST_NS if self.launch_ns is None else self.launch_ns.enter(state.path, arguments)
            return proc, gate, mount_ns
        except BaseException:
            os.close(gate)
            if proc is not None:  # at most waiting at its gate: nothing of the sandbox ran
                proc.kill()
                proc.wait()
            raise
        finally:
            os.close(gate_read)
            os.close(filter_fd)
            os.close(args_fd)
            channels.close_child_ends()

    def _compiled(self) -> Path | None:
        """The programs' bytecode for this launch, if made and still there (one gone is made again by the next
        ``start``; this launch compiles the sources inside as before)."""
        made = self._bytecode if self.compiled_programs else None
        if made is not None and not made.is_dir():
            self._bytecode = made = None
        return made

    def _supervisor_argv(
        self, spec: SandboxSpec, supervisor: str, channels: Channels, python: tuple[str, ...], compiled: Path | None
    ) -> list[str]:
        """``supervised.supervisor_argv``; a code sandbox's supervisor runs from its bytecode when there is some
        (``bytecode.runner_argv``: the same source file, its compile skipped)."""
        argv = supervisor_argv(spec, supervisor, channels, spec.agent_port, OUTBOUND_DIR, python)
        if compiled is not None:
            argv = bytecode.runner_argv(argv, supervisor)
        return argv

    def _bwrap_arguments(
        self,
        spec: SandboxSpec,
        state: StateDir,
        uid: int,
        filter_fd: int,
        link: network.Link | None,
        compiled: Path | None = None,
    ) -> bytes:
        """The sandbox's view (``launcher.bwrap_arguments``): /etc files, mounts, environment, ids, seccomp fd."""
        local_names = spec.outbound.hosts if spec.outbound else ()
        if self.shared_etc:
            etc = rootfs.shared_etc(self.state_root / ".etc", local_names)
        else:
            etc = rootfs.write_etc(state, local_names)
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
                bytecode=compiled,
            )
            chdir = str(spec.code_dir)
        else:
            try:
                user = image_root.resolve_user(spec.rootfs, spec.user)
                merged = image_root.mount_root(state, spec.rootfs, uid, spec.workdir, spec.outbound)
            except image_root.ImageError as exc:
                raise RuntimeClientError(f"The image cannot run: {exc}") from exc
            inside_ids = (user.uid, user.gid)
            env = agent_environment(spec, spec.agent_port, user.home, "/tmp")
            mounts = image_root.image_mounts(merged, etc, self.inside_files(), spec.limits.disk_bytes, spec.outbound)
            mounts += storage.cold_mounts(state, spec, uid, merged)
            chdir = image_root.normalized(spec.workdir)
        return bwrap_arguments(
            seccomp_fd=filter_fd,
            sandbox_uid=inside_ids[0],
            sandbox_gid=inside_ids[1],
            hostname=rootfs.HOSTNAME,
            mounts=mounts,
            environment=env,
            chdir=chdir,
            netns=str(link.netns_path) if link else None,
        )

    async def settle(self) -> None:
        await settle()

    async def cleanup_orphans(self) -> int:
        """Remove every sandbox of this installation (tag) that this backend object did not start."""
        return await self.resources.cleanup_orphans()


async def _finished(future: asyncio.Future[None]) -> None:
    """Wait until a thread's work is over, whatever its outcome (its error is the caller's to report, or not)."""
    with contextlib.suppress(BaseException):
        await asyncio.wait({future})
