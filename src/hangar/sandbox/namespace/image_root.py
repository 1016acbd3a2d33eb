"""What an image sandbox sees as ``/``: the image's read-only rootfs under a per-session writable overlay, with
Hangar's supervisor and the host's interpreter that runs it hidden under ``/.hangar`` (read-only).

The overlay is mounted by the host (root, initial namespaces) in the sandbox's state dir: its lower layer is an
ID-mapped, read-only clone of the store's rootfs (the store's root-owned files appear owned by the session's leased
uid, i.e. by the image's ``User`` inside), its upper and work directories live on the sandbox's size-capped tmpfs
(``rootfs.mount_writable``), so everything a session writes counts against its disk limit and disappears with it.
bubblewrap then binds the merged directory as ``/``. The
mount points bwrap needs are made by the host beforehand, walking the merged tree without following a single
symlink: an image may hold ``/opt -> /`` and must never make the host create anything outside its overlay.

The supervisor needs nothing of the image: the host's ``/usr`` is bound at ``/.hangar/usr`` and its Python runs
through the host's dynamic loader with ``--library-path`` (not inherited by the agent, unlike LD_LIBRARY_PATH).
"""

from __future__ import annotations

import ctypes
import glob
import os
import posixpath
import re
import stat
import subprocess
import threading
from collections import OrderedDict
from dataclasses import dataclass
from functools import cache
from pathlib import Path

from hangar.sandbox.base import OUTBOUND_DIR, Outbound
from hangar.sandbox.namespace.rootfs import _libc
from hangar.sandbox.state import StateDir
from hangar.sandbox.supervised import SUPERVISOR_SIBLINGS

HIDDEN = "/.hangar"
HOST_USR = f"{HIDDEN}/usr"
SUPERVISOR_PATH = f"{HIDDEN}/supervisor.py"
SUPERVISOR_SIBLING_PATHS = tuple(f"{HIDDEN}/{name}.py" for name in SUPERVISOR_SIBLINGS)  # it loads them by path
HOST_PYTHON = "/usr/bin/python3.11"
ISOLATE_IN_IMAGE = f"{HIDDEN}/isolate.py"  # a warm template's own programs (its forks never see them)
ZYGOTE_IN_IMAGE = f"{HIDDEN}/zygote.py"
# Where a fork attaches its own root before it pivots into it: a mount point at the top of the template's root, so
# that import-time code (which owns that root) can neither rename nor replace it, nor the way to it.
FORK_STAGE = "/.hangar-stage"
MIN_PYTHON = (3, 11)
ETC_FILES = ("hosts", "hostname", "resolv.conf")
MS_NOSUID = 0x2
MS_NODEV = 0x4


class ImageError(Exception):
    """The image cannot be run as configured (unknown user, a reserved path that is not a directory, ...)."""


def root_dir(state: StateDir) -> Path:
    """Where the merged overlay is mounted on the host (bound as the sandbox's ``/``)."""
    return state.path / "root"


@cache
def host_interpreter() -> tuple[str, ...]:
    """argv prefix that runs the host's Python inside an image sandbox: its loader, its libraries, its binary."""
    loaders = sorted(glob.glob("/usr/lib/*/ld-linux*.so.*")) or sorted(glob.glob("/usr/lib64/ld-linux*.so.*"))
    if not loaders:
        raise ImageError("the host has no dynamic loader under /usr (merged /usr is needed for image sessions)")
    loader = Path(os.path.realpath(loaders[0]))
    if not loader.is_relative_to("/usr"):
        raise ImageError(f"the host's dynamic loader {loader} is outside /usr")
    libs = [loader.parent, Path("/usr/lib")]
    inside = [f"{HOST_USR}/{p.relative_to('/usr')}" for p in libs]
    return (
        f"{HOST_USR}/{loader.relative_to('/usr')}",
        "--library-path",
        ":".join(inside),
        f"{HOST_USR}/{Path(HOST_PYTHON).relative_to('/usr')}",
    )


@dataclass(frozen=True)
class ImageUser:
    uid: int
    gid: int
    home: str


def _read_inside(rootfs: Path, relative: str, limit: int = 1 << 20) -> str:
    """A file of the image read without following any symlink (the image's /etc/passwd may point at the host's)."""
    fd = os.open(rootfs, os.O_RDONLY | os.O_DIRECTORY)
    try:
        parts = [p for p in relative.split("/") if p]
        for name in parts[:-1]:
            nxt = os.open(name, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW, dir_fd=fd)
            os.close(fd)
            fd = nxt
        leaf = os.open(parts[-1], os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK, dir_fd=fd)
        try:
            if not stat.S_ISREG(os.fstat(leaf).st_mode):
                return ""
            return os.read(leaf, limit).decode(errors="replace")
        finally:
            os.close(leaf)
    except OSError:
        return ""
    finally:
        os.close(fd)


def _table(text: str) -> list[list[str]]:
    return [line.split(":") for line in text.splitlines() if line and not line.startswith("#")]


def resolve_user(rootfs: Path, user: str) -> ImageUser:
    """The image's ``User`` ("", "name", "uid", "name:group", "uid:gid") as numbers, the way container runtimes
    read it from the image's own /etc/passwd and /etc/group; the home directory comes from passwd too."""
    name, _, group = user.partition(":")
    passwd = _table(_read_inside(rootfs, "etc/passwd"))
    entry = None
    for row in passwd:
        if len(row) >= 7 and (row[0] == name or (name.isdigit() and row[2] == name)):
            entry = row
            break
    if not name:
        uid = 0
        entry = entry or next((r for r in passwd if len(r) >= 7 and r[2] == "0"), None)
    elif name.isdigit():
        uid = int(name)
    elif entry is not None and entry[2].isdigit():
        uid = int(entry[2])
    else:
        raise ImageError(f"the image's User {user!r} is not in its /etc/passwd")
    gid = int(entry[3]) if entry is not None and entry[3].isdigit() else 0
    if group:
        if group.isdigit():
            gid = int(group)
        else:
            found = [r for r in _table(_read_inside(rootfs, "etc/group")) if len(r) >= 3 and r[0] == group]
            if not found or not found[0][2].isdigit():
                raise ImageError(f"the image's User {user!r}: group {group!r} is not in its /etc/group")
            gid = int(found[0][2])
    if not (0 <= uid < 1 << 31 and 0 <= gid < 1 << 31):
        raise ImageError(f"the image's User {user!r} is out of range")
    home = entry[5] if entry is not None and entry[5].startswith("/") else ("/root" if uid == 0 else "/")
    return ImageUser(uid, gid, home)


def inside_parts(path: str) -> list[str]:
    """The components of an absolute path inside the image, ``..`` resolved lexically against ``/`` (never above it:
    ``WorkingDir`` comes from whoever pushed the image)."""
    return [p for p in posixpath.normpath("/" + path).split("/") if p not in ("", ".", "..")]


def normalized(path: str) -> str:
    return "/" + "/".join(inside_parts(path))


def _ensure(root: Path, relative: str, kind: str, mode: int = 0o755) -> None:
    """Make ``relative`` a directory (or an empty regular file, ``kind == "file"``) inside the merged ``root``,
    never following a symlink: a symlink or other file in the way is replaced (in the session's upper layer)."""
    parts = inside_parts(relative)
    fd = os.open(root, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW)
    try:
        for index, name in enumerate(parts):
            want_file = kind == "file" and index == len(parts) - 1
            try:
                found = os.stat(name, dir_fd=fd, follow_symlinks=False).st_mode
            except FileNotFoundError:
                found = None
            if found is not None and (stat.S_ISREG(found) if want_file else stat.S_ISDIR(found)):
                pass
            elif found is not None and stat.S_ISDIR(found):
                raise ImageError(f"the image's /{'/'.join(parts[: index + 1])} is a directory, Hangar mounts a file")
            else:
                if found is not None:
                    os.unlink(name, dir_fd=fd)
                if want_file:
                    os.close(os.open(name, os.O_CREAT | os.O_EXCL | os.O_WRONLY | os.O_NOFOLLOW, 0o644, dir_fd=fd))
                else:
                    os.mkdir(name, mode, dir_fd=fd)
            if not want_file:
                nxt = os.open(name, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW, dir_fd=fd)
                os.close(fd)
                fd = nxt
    finally:
        os.close(fd)


def mount_root(state: StateDir, image_rootfs: Path, uid: int, workdir: str, outbound: Outbound | None) -> Path:
    """Mount the session's overlay (upper and work dirs on its tmpfs, the upper's root owned by its leased uid) and
    make every mount point bwrap will need; returns the merged directory."""
    upper, work, merged, lower = state.rw / "upper", state.rw / "work", root_dir(state), state.path / "lower"
    upper.mkdir(mode=0o755)
    work.mkdir(mode=0o700)
    # SAFETY: the upper layer's root is the sandbox's own "/" (as a container's is); on its own size-capped tmpfs.
    os.chown(upper, uid, uid)
    merged.mkdir(mode=0o755)
    lower.mkdir(mode=0o755)
    attach_idmapped(image_rootfs, lower, uid)
    options = f"lowerdir={lower},upperdir={upper},workdir={work}".encode()
    # SAFETY: an overlay of the read-only image store (lower) and the sandbox's own tmpfs (upper, work) on a
    # directory we just created in our own state dir; rootfs.unmount_writable() detaches it on stop and orphan cleanup.
    if _libc().mount(b"hangar-image", str(merged).encode(), b"overlay", MS_NOSUID | MS_NODEV, options) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"mount overlay on {merged}: {os.strerror(err)}")
    for path in ("proc", "dev", HOST_USR, "etc", workdir):
        _ensure(merged, path, "dir")
    for path in (SUPERVISOR_PATH, *SUPERVISOR_SIBLING_PATHS):
        _ensure(merged, path, "file")
    for name in ETC_FILES:
        _ensure(merged, f"etc/{name}", "file")
    _ensure(merged, "tmp", "dir")
    _sticky_tmp(merged)
    if outbound is not None:
        _ensure(merged, OUTBOUND_DIR, "dir")
    return merged


def template_mount_points(merged: Path) -> None:
    """The template's extra mount point in its root: the stage its forks attach their roots on (its isolate.py and
    zygote.py are bound in the tmpfs bwrap mounts on /.hangar for it)."""
    _ensure(merged, FORK_STAGE, "dir")


def detached_copy(merged: Path) -> int:
    """A detached copy of a fork's merged root (``open_tree``): the fd the fork attaches in its own namespaces."""
    flags = OPEN_TREE_CLONE | OPEN_TREE_CLOEXEC | AT_RECURSIVE
    return _check(_libc().syscall(SYS_OPEN_TREE, AT_FDCWD, str(merged).encode(), flags), f"open_tree {merged}")


def _inside_target(rootfs: Path, path: str) -> str | None:
    """Where ``path`` leads inside the image, its symlinks resolved against the image's root (never the host's)."""
    parts, hops = inside_parts(path), 0
    done: list[str] = []
    while parts:
        name = parts.pop(0)
        here = rootfs.joinpath(*done, name)
        if here.is_symlink():
            hops += 1
            if hops > 40:
                return None
            link = os.readlink(here)
            parts = inside_parts(link if link.startswith("/") else "/".join([*done, link])) + parts
            done = []
            continue
        if not os.path.lexists(here):
            return None
        done.append(name)
    return "/" + "/".join(done)


def image_python(rootfs: Path, program: str, path_env: str) -> tuple[str | None, str]:
    """The image's interpreter for a template (its path inside), or None and why its sessions start cold: the zygote,
    isolate.py and the supervisor run on it in every fork, so it must be CPython 3.11+ and resolve inside the image."""
    candidates = [program] if "/" in program else [f"{d}/{program}" for d in path_env.split(":") if d.startswith("/")]
    for candidate in candidates:
        target = _inside_target(rootfs, candidate)
        if target is None or not (rootfs / target.lstrip("/")).is_file():
            continue
        found = re.fullmatch(r"python(\d+)\.(\d+)", posixpath.basename(target))
        versions = [(int(found[1]), int(found[2]))] if found else []
        if not versions:
            for lib in ("usr/lib", "usr/local/lib"):
                for os_py in (rootfs / lib).glob("python3.*/os.py"):
                    minor = os_py.parent.name.removeprefix("python3.")
                    versions += [(3, int(minor))] if minor.isdigit() else []
        if not versions:
            return None, f"the image's {candidate} is not a Python whose version Hangar can tell"
        if max(versions) < MIN_PYTHON:
            return None, f"the image's Python is {'.'.join(map(str, max(versions)))}; forks need 3.11 or later"
        return candidate, ""
    return None, f"the image has no {program} to run a warm template on"


def _sticky_tmp(merged: Path) -> None:
    """/tmp is world-writable and sticky, as every image expects (made so in the upper layer when it is not)."""
    fd = os.open(merged / "tmp", os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW)
    try:
        if stat.S_IMODE(os.fstat(fd).st_mode) != 0o1777:
            os.fchmod(fd, 0o1777)
    finally:
        os.close(fd)


AT_FDCWD = -100
AT_EMPTY_PATH = 0x1000
AT_RECURSIVE = 0x8000
OPEN_TREE_CLONE = 0x1
OPEN_TREE_CLOEXEC = 0o2000000
MOVE_MOUNT_F_EMPTY_PATH = 0x4
MOUNT_ATTR_IDMAP = 0x00100000
MOUNT_ATTR_RDONLY = 0x1
SYS_OPEN_TREE, SYS_MOVE_MOUNT, SYS_MOUNT_SETATTR = 428, 429, 442  # the same number on every architecture
# leased uid -> fd of a user namespace mapping 0 onto it; bounded (leases rotate through 65536 uids), the oldest fd
# is closed first (an ID-mapped mount keeps its own reference to its namespace)
_userns: OrderedDict[int, int] = OrderedDict()
USERNS_CACHE = 256
_userns_lock = threading.Lock()


class _MountAttr(ctypes.Structure):
    _fields_ = [
        ("attr_set", ctypes.c_uint64),
        ("attr_clr", ctypes.c_uint64),
        ("propagation", ctypes.c_uint64),
        ("userns_fd", ctypes.c_uint64),
    ]


def _userns_fd(uid: int) -> int:
    """A user namespace whose uid and gid 0 are the host's ``uid`` (made once per leased uid by a short-lived
    ``unshare --user`` child; the namespace lives on through the fd)."""
    with _userns_lock:
        if uid in _userns:
            _userns.move_to_end(uid)  # the newest: the trim below never takes it
            while len(_userns) > USERNS_CACHE:  # the bound holds on hits too (it may have been lowered)
                os.close(_userns.popitem(last=False)[1])
            return _userns[uid]
        while len(_userns) >= USERNS_CACHE:
            os.close(_userns.popitem(last=False)[1])
        child = subprocess.Popen(
            ["unshare", "--user", "/bin/sh", "-c", "echo; exec sleep 60"],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            env={"PATH": "/usr/bin:/bin"},
        )
        try:
            assert child.stdout is not None
            child.stdout.readline()  # the shell runs: the child is in its new user namespace
            for name in ("uid_map", "gid_map"):
                # SAFETY: root maps the child's fresh, empty user namespace's 0 onto the sandbox's leased uid only.
                with open(f"/proc/{child.pid}/{name}", "w") as mapping:
                    mapping.write(f"0 {uid} 1\n")
            fd = os.open(f"/proc/{child.pid}/ns/user", os.O_RDONLY | os.O_CLOEXEC)
        finally:
            child.kill()
            child.wait()
        _userns[uid] = fd
        return fd


def _check(result: int, what: str) -> int:
    if result < 0:
        err = ctypes.get_errno()
        raise OSError(err, f"{what}: {os.strerror(err)}")
    return result


def attach_idmapped(source: Path, target: Path, uid: int) -> None:
    """Attach a read-only, ID-mapped view of ``source`` at ``target``: the store's root-owned files appear owned by
    the session's leased uid, which is the image's ``User`` inside, so the image's user owns its image (as in a
    container) while the store itself stays untouched and read-only."""
    libc = _libc()
    tree = _check(
        libc.syscall(SYS_OPEN_TREE, AT_FDCWD, str(source).encode(), OPEN_TREE_CLONE | OPEN_TREE_CLOEXEC | AT_RECURSIVE),
        f"open_tree {source}",
    )
    try:
        attr = _MountAttr(MOUNT_ATTR_IDMAP | MOUNT_ATTR_RDONLY, 0, 0, _userns_fd(uid))
        # SAFETY: changes only the detached clone of the store's mount we just made (no one else holds it).
        _check(
            libc.syscall(
                SYS_MOUNT_SETATTR, tree, b"", AT_EMPTY_PATH | AT_RECURSIVE, ctypes.byref(attr), ctypes.sizeof(attr)
            ),
            "mount_setattr idmap",
        )
        # SAFETY: attaches it on a directory we just created in the sandbox's own state dir (detached at stop).
        _check(
            libc.syscall(SYS_MOVE_MOUNT, tree, b"", AT_FDCWD, str(target).encode(), MOVE_MOUNT_F_EMPTY_PATH),
            f"move_mount {target}",
        )
    finally:
        os.close(tree)


def image_mounts(merged: Path, etc: Path, inside: Path, shm_bytes: int, outbound: Outbound | None) -> list[str]:
    """bwrap's binds for an image sandbox: the merged overlay as ``/`` (writable), /proc, /dev with a size-capped
    /dev/shm, Hangar's hosts/hostname and the host's resolv.conf, the host's /usr and the supervisor (read-only,
    hidden), and the outbound socket dir."""
    args = ["--bind", str(merged), "/", "--proc", "/proc", "--dev", "/dev"]
    args += ["--size", str(max(shm_bytes, 4096)), "--tmpfs", "/dev/shm"]
    for name in ("hosts", "hostname"):
        args += ["--ro-bind", str(etc / name), f"/etc/{name}"]
    args += ["--ro-bind-try", "/etc/resolv.conf", "/etc/resolv.conf"]
    args += ["--ro-bind", "/usr", HOST_USR, "--ro-bind", str(inside / "supervisor.py"), SUPERVISOR_PATH]
    for path in SUPERVISOR_SIBLING_PATHS:
        args += ["--ro-bind", str(inside / Path(path).name), path]
    if outbound is not None:
        args += ["--ro-bind", str(outbound.socket_dir), OUTBOUND_DIR]
    return args
