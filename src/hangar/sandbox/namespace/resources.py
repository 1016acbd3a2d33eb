"""The host resources every namespace sandbox holds, acquired and released in one place.

A cold session, a template and a prepared fork each hold the same set, all named after the sandbox id: the state
dir ``<state_root>/<sandbox_id>``, a uid lease, the cgroup ``hangar-<tag>-<sandbox_id>`` with its limits, the
size-capped writable tmpfs and, with egress, a veth pair in a network namespace of its own. Because everything is
named after the sandbox, ``cleanup_orphans`` needs nothing from memory.
"""

from __future__ import annotations

import asyncio
import logging
import os
import stat
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Literal

from hangar.sandbox.base import SandboxSpec
from hangar.sandbox.namespace import network, rootfs
from hangar.sandbox.namespace.cgroups import Cgroup, CgroupLayout, list_names
from hangar.sandbox.namespace.uids import UidLeases
from hangar.sandbox.state import StateDir, create_state, list_states
from hangar.sandbox.supervised import INSIDE_PROGRAMS

log = logging.getLogger(__name__)

# A stopped sandbox's veth is left to the kernel (removed with its netns); its uid lease, which names the sandbox's
# /30, is released only once the veth is gone, by a task here. After this long the veth is deleted explicitly.
LINK_GONE_TIMEOUT_S = 5.0
LINK_POLL_S = 0.01
STATE_ROOT_MODE = 0o711  # sandboxes reach their own sockets through it; nobody lists it
_settling: dict[str, asyncio.Task[None]] = {}  # sandbox id -> the task releasing its lease once its veth is gone
_TEARDOWN_THREADS = ThreadPoolExecutor(max_workers=2, thread_name_prefix="hangar-teardown")


class SessionResources:
    """Acquires and releases a sandbox's host resources; knows which sandboxes of this installation are live."""

    def __init__(
        self,
        backend_name: str,
        state_root: Path,
        tag: str,
        layout: CgroupLayout,
        leases: UidLeases,
        egress: Literal["allow", "deny"],
    ) -> None:
        self.backend_name = backend_name  # recorded in each state dir
        self.state_root = state_root
        self.tag = tag
        self.layout = layout
        self.leases = leases
        self.egress = egress
        self.live: set[str] = set()  # sandbox ids this object acquired and has not released
        self._firewall_installed = False
        self._firewall_lock = threading.Lock()  # concurrent starts connect in worker threads

    def cgroup(self, sandbox_id: str) -> Cgroup:
        return Cgroup(self.layout, f"hangar-{self.tag}-{sandbox_id}")

    def inside_files(self) -> Path:
        """Root-owned, world-readable copies of the in-sandbox programs the sandbox uid can read (the install may be
        0700): ``supervised.INSIDE_PROGRAMS`` (supervisor, isolate, zygote, ...), bound read-only under /opt/hangar."""
        inside = self.state_root / ".inside"  # a dot: never mistaken for a sandbox's state dir
        inside.mkdir(mode=0o755, exist_ok=True)
        for source in INSIDE_PROGRAMS:
            copy = inside / source.name
            data = source.read_bytes()
            if not copy.exists() or copy.read_bytes() != data:
                tmp = copy.with_suffix(f".{os.getpid()}.{threading.get_ident()}.tmp")  # a thread may copy too
                tmp.write_bytes(data)
                tmp.chmod(0o644)
                tmp.replace(copy)
        return inside

    def holder(self, uid: int) -> str | None:
        """The live sandbox running as host ``uid`` (each holds its own lease), else None."""
        sandbox_id = self.leases.holder(uid)
        return sandbox_id if sandbox_id in self.live else None

    async def acquire(self, spec: SandboxSpec, writable_bytes: int | None = None) -> tuple[StateDir, int, Cgroup]:
        """State dir, uid lease, cgroup with its limits and the size-capped writable tmpfs (undone by ``release``).

        ``writable_bytes``: the tmpfs's size when it holds less than home, /tmp and the log (a fork's log only)."""
        state = create_state(self.state_root, spec.sandbox_id)
        if stat.S_IMODE(self.state_root.stat().st_mode) != STATE_ROOT_MODE:  # a chmod per start stalled the loop
            self.state_root.chmod(STATE_ROOT_MODE)
        self.live.add(spec.sandbox_id)
        uid: int | None = None
        cgroup: Cgroup | None = None
        try:
            uid = self.leases.acquire(spec.sandbox_id)
            cgroup = self.cgroup(spec.sandbox_id)
            state.write_record(backend=self.backend_name, tag=self.tag, uid=uid, cgroup=cgroup.name)
            rootfs.mount_writable(state, writable_bytes or spec.limits.disk_bytes, uid)
            cgroup.create(spec.limits)
        except BaseException:
            self.live.discard(spec.sandbox_id)
            await remove(spec.sandbox_id, state, cgroup, self.leases, uid, None)
            raise
        return state, uid, cgroup

    async def release(
        self, sandbox_id: str, state: StateDir, cgroup: Cgroup, uid: int, link: network.Link | None
    ) -> None:
        self.live.discard(sandbox_id)
        await remove(sandbox_id, state, cgroup, self.leases, uid, names(link))

    async def plan_link(self, spec: SandboxSpec, uid: int) -> network.Link | None:
        """The sandbox's veth plan when it gets egress (firewall installed once); None for loopback only."""
        if spec.network != "public" or self.egress != "allow":
            return None
        if not self._firewall_installed:  # a thread hop only the first time (a cold start's path)
            await asyncio.to_thread(self._install_firewall)
        return network.plan(self.tag, spec.sandbox_id, uid - self.leases.first)

    def _install_firewall(self) -> None:
        with self._firewall_lock:
            if not self._firewall_installed:
                network.install_firewall()
                self._firewall_installed = True

    async def cleanup_orphans(self) -> int:
        """Remove every sandbox of this installation (tag) that this object did not acquire."""
        orphans: set[str] = set()
        for state in list_states(self.state_root):
            if state.sandbox_id in self.live:
                continue
            orphans.add(state.sandbox_id)
            uid = state.read_record().get("uid")
            await remove(
                state.sandbox_id,
                state,
                self.cgroup(state.sandbox_id),
                self.leases,
                uid if isinstance(uid, int) else None,
                network.names(self.tag, state.sandbox_id),
                lazy_link=False,
            )
        prefix = f"hangar-{self.tag}-"
        for name in list_names(self.layout, prefix):
            sandbox_id = name[len(prefix) :]
            if sandbox_id not in self.live:
                orphans.add(sandbox_id)
                await remove(sandbox_id, None, Cgroup(self.layout, name), self.leases, None, None)
        for name in network.list_netns(prefix):
            sandbox_id = name[len(prefix) :]
            if sandbox_id not in self.live:
                orphans.add(sandbox_id)
                netns = network.names(self.tag, sandbox_id)
                await remove(sandbox_id, None, None, self.leases, None, netns, lazy_link=False)
        for uid, sandbox_id in self.leases.owned().items():
            if sandbox_id not in self.live and sandbox_id not in _settling:
                orphans.add(sandbox_id)
                self.leases.release(uid, sandbox_id)
        if orphans:
            log.warning("removed %d orphaned sandboxes of a previous Hangar process", len(orphans))
        return len(orphans)


async def remove(
    sandbox_id: str,
    state: StateDir | None,
    cgroup: Cgroup | None,
    leases: UidLeases,
    uid: int | None,
    netns: tuple[str, str] | None,
    lazy_link: bool = True,
) -> None:
    """Undo a sandbox in reverse order of creation; every step tolerates what is already gone.

    With ``lazy_link`` (a sandbox's own stop) only the netns is deleted: the kernel removes the veth with it soon
    after, off the stop's path, and the uid lease is released by a background task once the veth is gone."""
    if cgroup is not None:
        await cgroup.kill_all()
        await cgroup.remove()
    if netns is not None:
        await _teardown_thread(network.delete, *netns, not lazy_link)
    if state is not None:  # off the event loop: under load the unmount and rmtree took ~10 ms of it per stop
        await _teardown_thread(_remove_state, state)
    if uid is None:
        return
    if netns is not None and lazy_link and network.link_exists(netns[1]):
        task = asyncio.create_task(_release_when_gone(leases, uid, sandbox_id, netns))
        _settling[sandbox_id] = task
        task.add_done_callback(lambda _: _settling.pop(sandbox_id, None))
    else:
        leases.release(uid, sandbox_id)


async def _teardown_thread(work: Callable[..., None], *args: object) -> None:
    """Teardown's blocking steps on threads of their own: a burst of stops finishing in the background
    (``sessions/teardown.py``) never queues ahead of a start's steps in the loop's default executor."""
    await asyncio.get_running_loop().run_in_executor(_TEARDOWN_THREADS, work, *args)


def _remove_state(state: StateDir) -> None:
    rootfs.unmount_writable(state)
    state.remove()


async def _release_when_gone(leases: UidLeases, uid: int, sandbox_id: str, netns: tuple[str, str]) -> None:
    """Hold the lease (the sandbox's /30) while its host veth exists; delete the veth if the kernel has not."""
    try:
        deadline = asyncio.get_running_loop().time() + LINK_GONE_TIMEOUT_S
        while network.link_exists(netns[1]) and asyncio.get_running_loop().time() < deadline:
            await asyncio.sleep(LINK_POLL_S)
        if network.link_exists(netns[1]):
            log.warning("the veth %s outlived its netns for %.0f s: deleting it", netns[1], LINK_GONE_TIMEOUT_S)
            await _teardown_thread(network.delete, *netns)
    finally:
        if not network.link_exists(netns[1]):
            leases.release(uid, sandbox_id)


async def settle() -> None:
    """Wait until every stopped sandbox's veth is gone and its uid lease released (Hangar's shutdown)."""
    while _settling:
        await asyncio.gather(*list(_settling.values()), return_exceptions=True)


def names(link: network.Link | None) -> tuple[str, str] | None:
    return (link.netns, link.host_if) if link else None
