"""A session's persistent storage and a version's shared volumes in a namespace sandbox (the host side).

The sessions layer hands the sandbox ``spec.storage``: the host mount (root-only, never seen by a sandbox) of the
session's own ext4 image, whose files belong on disk to uid 0, "the session's user". This module attaches an
ID-mapped clone of it (on-disk 0 <-> the sandbox's leased host uid, which is 1000 inside) at the version's
``spec.storage_path``:

* cold start: at ``<state>/storage``, bound by bwrap at the mount path (``cold_mounts``);
* forked start: a fork is prepared before its session id is known, by a process that has no capabilities left once
  it is ready. Each prepared fork gets an empty *slot* ``<state_root>/.slots/<sandbox id>`` on a host mount that is
  shared; the template's root binds its version's directory of it (``version_slots``: a slave; no template sees
  another version's slots) at ``SLOTS_INSIDE``, and the fork, while
  still privileged in its own namespaces, binds its slot at the mount path (a slave too) and covers the slots
  directory (``isolate.enter_session``). On the request path ``attach_to_fork`` attaches the session's clone onto
  the slot: one ``move_mount`` the kernel propagates into the fork's mount path, checked through ``/proc/PID/root``.

Files keep their modes, mtimes and symlinks; hard links cannot leave a file system; a symlink is resolved inside
the sandbox's own root, which holds nothing of the host's but what every sandbox sees anyway. Views are detached
with the sandbox (``rootfs.unmount_writable``); the image itself is mounted and unmounted by ``sessions/storage.py``.
"""

from __future__ import annotations

import contextlib
import ctypes
import hashlib
import os
import threading
from dataclasses import replace
from pathlib import Path

from hangar.domain.errors import InternalError
from hangar.sandbox.base import SandboxSpec
from hangar.sandbox.namespace import image_root
from hangar.sandbox.namespace.rootfs import _libc
from hangar.sandbox.state import StateDir

SLOTS_INSIDE = "/run/hangar-slots"  # where a template sees the slots directory (covered in every fork)
SLOTS_DIR = ".slots"  # under the state root; a dot: never mistaken for a sandbox's state dir
VIEW_DIR = "storage"  # under a cold sandbox's state dir
MS_BIND = 0x1000
MS_SHARED = 1 << 20
MS_PRIVATE = 1 << 18
MS_NOSUID = 0x2
MS_NODEV = 0x4
_slots_lock = threading.Lock()


def _mount_points() -> set[str]:
    with open("/proc/self/mountinfo") as info:
        return {_unescape(line.split()[4]) for line in info}


def _unescape(field: str) -> str:
    return field.encode().decode("unicode_escape") if "\\" in field else field


def slots_root(state_root: Path) -> Path:
    """``<state_root>/.slots``: root-owned, 0711, bound on itself and made shared once per boot, so that a mount on
    one of its slots propagates into the template's slave copy and from there into the fork that bound it."""
    path = state_root / SLOTS_DIR
    with _slots_lock:
        path.mkdir(mode=0o711, exist_ok=True)
        if str(path) not in _mount_points():
            # SAFETY: a bind of our own root-owned directory onto itself, made a shared mount (a peer group of one).
            _call(_libc().mount(str(path).encode(), str(path).encode(), None, MS_BIND, None), f"bind {path}")
            # A peer group of its own, whatever the host's root is (a systemd root is shared with other namespaces).
            _call(_libc().mount(None, str(path).encode(), None, MS_PRIVATE, None), f"make {path} private")
        _call(_libc().mount(None, str(path).encode(), None, MS_SHARED, None), f"make {path} shared")
    return path


def version_slots(state_root: Path, spec: SandboxSpec) -> Path:
    """The slots of one version's forks: what a template's spec and its forks' specs share (everything but the
    sandbox id and the session's storage, as ``take_fork`` compares them) names the directory."""
    digest = hashlib.sha256(repr(replace(spec, sandbox_id="", storage=None)).encode()).hexdigest()[:20]
    path = slots_root(state_root) / digest
    path.mkdir(mode=0o711, exist_ok=True)
    return path


def unmount_slots(state_root: Path) -> None:
    """At shutdown, after every sandbox and template stopped: no mount left behind (a killed process's is reused)."""
    path = state_root / SLOTS_DIR
    if str(path) in _mount_points():
        # SAFETY: detaches the slots mount of this installation; no sandbox of it runs any more.
        _libc().umount2(str(path).encode(), 0x2)


def template_mounts(state_root: Path, spec: SandboxSpec, merged: Path | None = None) -> list[str]:
    """bwrap arguments for a warm template's root: the version's shared volumes, and with sessionStorage the slots
    directory and (code) the mount point every fork binds its slot on. ``merged``: an image template's root, where
    the mount points are made without following the image's symlinks (its forks pivot into roots of their own,
    which the host prepares with ``image_fork_points``; they carry the volumes and their slot over)."""
    if merged is not None:
        for path in (*(v.path for v in spec.volumes), *((SLOTS_INSIDE,) if spec.storage_path else ())):
            image_root._ensure(merged, path, "dir")
    args = volume_mounts(spec)
    if spec.storage_path is not None:
        args += ["--bind", str(version_slots(state_root, spec)), SLOTS_INSIDE]
        if merged is None:
            args += ["--perms", "0755", "--dir", "/mnt", "--perms", "0755", "--dir", spec.storage_path]
    return args


def image_fork_points(merged: Path, spec: SandboxSpec) -> None:
    """The mount points of an image fork's own root (made by the host before the root is handed to the fork)."""
    for path in (*(v.path for v in spec.volumes), *((spec.storage_path,) if spec.storage_path else ())):
        image_root._ensure(merged, path, "dir")


def volume_mounts(spec: SandboxSpec) -> list[str]:
    args: list[str] = []
    for volume in spec.volumes:
        args += ["--ro-bind" if volume.read_only else "--bind", str(volume.source), volume.path]
    return args


def cold_mounts(state: StateDir, spec: SandboxSpec, uid: int, merged: Path | None = None) -> list[str]:
    """bwrap arguments for a cold sandbox: shared volumes, and the session's storage attached ID-mapped for ``uid``
    at ``<state>/storage`` and bound at its mount path. ``merged``: an image sandbox's root, in which the mount
    points are made without following the image's symlinks."""
    if spec.storage_path is not None and spec.storage is None:
        raise InternalError("a session with sessionStorage started without its storage")
    if merged is not None:
        for volume in spec.volumes:
            image_root._ensure(merged, volume.path, "dir")
        if spec.storage_path is not None:
            image_root._ensure(merged, spec.storage_path, "dir")
    args = volume_mounts(spec)
    if spec.storage_path is not None and spec.storage is not None:
        view = state.path / VIEW_DIR
        view.mkdir(mode=0o755)
        attach(spec.storage, view, uid)
        args += ["--bind", str(view), spec.storage_path]
    return args


def fork_request(state_root: Path, spec: SandboxSpec, uid: int) -> dict[str, object] | None:
    """The prepared fork's empty slot (the zygote's request names where the fork finds it and where it binds it)
    and the volumes an image fork carries into its own root. The user namespace the session's ID-mapped view needs
    is made now: ~25 ms (a short-lived ``unshare`` child) that would otherwise fall on the request path, where
    attaching the view then takes ~0.1 ms."""
    if spec.storage_path is None and not spec.volumes:
        return None
    request: dict[str, object] = {"volumes": [[v.path, v.read_only] for v in spec.volumes]}
    if spec.storage_path is not None:
        image_root._userns_fd(uid)
        slot = version_slots(state_root, spec) / spec.sandbox_id
        slot.mkdir(mode=0o755)
        request.update(slot=f"{SLOTS_INSIDE}/{spec.sandbox_id}", path=spec.storage_path)
    return request


def attach_to_fork(state_root: Path, spec: SandboxSpec, prepared_id: str, uid: int, pid: int) -> None:
    """On the request path: the session's storage onto the prepared fork's slot, which propagates to its mount
    path; checked from the host (a fork whose mount path is not the storage never starts its agent)."""
    if spec.storage_path is None:
        return
    if spec.storage is None:
        raise InternalError("a session with sessionStorage started without its storage")
    # A code fork covered its view of the slots (isolate.py); an image fork pivoted away from the template's root.
    if spec.rootfs is None and os.listdir(f"/proc/{pid}/root{SLOTS_INSIDE}"):
        raise InternalError("the forked sandbox still sees other sessions' storage slots")
    slot = version_slots(state_root, spec) / prepared_id
    attach(spec.storage, slot, uid)
    inside = os.stat(f"/proc/{pid}/root{spec.storage_path}")
    if inside.st_dev != os.stat(slot).st_dev:
        raise InternalError("the session's storage did not reach the forked sandbox")


def attach(base: Path, target: Path, uid: int) -> None:
    """Attach a writable clone of ``base`` at ``target`` whose on-disk uid and gid 0 are the host's ``uid``."""
    libc = _libc()
    flags = image_root.OPEN_TREE_CLONE | image_root.OPEN_TREE_CLOEXEC
    tree = image_root._check(
        libc.syscall(image_root.SYS_OPEN_TREE, image_root.AT_FDCWD, str(base).encode(), flags), f"open_tree {base}"
    )
    try:
        attr = image_root._MountAttr(image_root.MOUNT_ATTR_IDMAP, 0, 0, image_root._userns_fd(uid))
        # SAFETY: changes only the detached clone we just made of the session's own storage.
        image_root._check(
            libc.syscall(
                image_root.SYS_MOUNT_SETATTR,
                tree,
                b"",
                image_root.AT_EMPTY_PATH,
                ctypes.byref(attr),
                ctypes.sizeof(attr),
            ),
            "mount_setattr idmap",
        )
        # SAFETY: attaches it on an empty directory of the sandbox's own (its state dir or its slot).
        image_root._check(
            libc.syscall(
                image_root.SYS_MOVE_MOUNT,
                tree,
                b"",
                image_root.AT_FDCWD,
                str(target).encode(),
                image_root.MOVE_MOUNT_F_EMPTY_PATH,
            ),
            f"move_mount {target}",
        )
    finally:
        os.close(tree)


def detach_views(state: StateDir) -> None:
    """Detach a sandbox's storage view and slot (before its state dir is removed: never delete through them)."""
    slots = state.path.parent / SLOTS_DIR
    for path in (state.path / VIEW_DIR, *slots.glob(f"*/{state.sandbox_id}")):
        if not path.is_dir():
            continue
        while str(path) in _mount_points():
            # SAFETY: detaches only the storage view or slot mounted on this sandbox's own directory.
            if _libc().umount2(str(path).encode(), 0x2) != 0:
                err = ctypes.get_errno()
                raise OSError(err, f"umount {path}: {os.strerror(err)}")
        with contextlib.suppress(OSError):
            path.rmdir()


def _call(result: int, what: str) -> None:
    if result != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"{what}: {os.strerror(err)}")
