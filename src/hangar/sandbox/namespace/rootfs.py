"""What a namespace sandbox sees as ``/``: read-only system dirs, a minimal /etc, its code and env read-only, and
one size-limited tmpfs (mounted on the host, in the state dir) for its home and /tmp.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import errno
import hashlib
import json
import os
import shutil
import threading
from collections.abc import Callable
from functools import cache
from pathlib import Path

from hangar.sandbox.base import OUTBOUND_DIR, Outbound
from hangar.sandbox.state import StateDir
from hangar.sandbox.supervised import INSIDE_PROGRAMS

HOME = "/home/agent"
INSIDE_DIR = "/opt/hangar"  # Hangar's stdlib-only in-sandbox programs, read-only
SUPERVISOR_PATH = f"{INSIDE_DIR}/supervisor.py"
ISOLATE_PATH = f"{INSIDE_DIR}/isolate.py"
ZYGOTE_PATH = f"{INSIDE_DIR}/zygote.py"
BYTECODE_DIR = "__pycache__"  # the programs' checked-hash pycs (``bytecode.py``), where their loader looks
WARMUP_PATH = f"{INSIDE_DIR}/warmup.py"  # the zygote's first-use warm-up (sandbox/warmup.py)
SANDBOX_UID = 1000  # the agent's uid as seen inside; the host sees the leased uid
HOSTNAME = "sandbox"
SYSTEM_LINKS = ("bin", "sbin", "lib", "lib32", "lib64", "libx32")
# Host files the agent may read: name resolution config, CA certificates, time zone, linker cache, alternatives.
ETC_FROM_HOST = (
    "nsswitch.conf",
    "resolv.conf",
    "ssl",
    "ca-certificates",
    "localtime",
    "ld.so.cache",
    "alternatives",
    "mime.types",
    "python3.11",
)
MS_NOSUID = 0x2
MS_NODEV = 0x4
MNT_DETACH = 0x2


@cache
def _libc() -> ctypes.CDLL:
    # SAFETY: the C library is always loaded in this process; mount/umount2 signatures are declared before use.
    libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
    libc.mount.argtypes = [ctypes.c_char_p, ctypes.c_char_p, ctypes.c_char_p, ctypes.c_ulong, ctypes.c_char_p]
    libc.umount2.argtypes = [ctypes.c_char_p, ctypes.c_int]
    return libc


def mount_writable(state: StateDir, size_bytes: int, uid: int) -> None:
    """A tmpfs of ``size_bytes`` owned by the sandbox uid: the only writable storage a sandbox has (home + /tmp)."""
    state.rw.mkdir(mode=0o700)
    options = f"size={max(size_bytes, 4096)},mode=0700,uid={uid},gid={uid}".encode()
    # SAFETY: mounts a fresh, size-capped tmpfs (nosuid, nodev) on a directory we just created inside our own state
    # dir; nothing else is mounted there and unmount_writable() detaches it on stop or orphan cleanup.
    if _libc().mount(b"hangar-sandbox", str(state.rw).encode(), b"tmpfs", MS_NOSUID | MS_NODEV, options) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"mount tmpfs on {state.rw}: {os.strerror(err)}")
    for path in (state.home, state.tmp):
        path.mkdir(mode=0o700)
        # SAFETY: hands the sandbox's own fresh directories on its own tmpfs to its leased uid.
        os.chown(path, uid, uid)


def unmount_writable(state: StateDir) -> None:
    """Detach an image sandbox's overlay and its ID-mapped lower layer (``image_root.mount_root``: its upper layer
    lives on the tmpfs), then the tmpfs. The lower layer is a bind of the same file system (``ismount`` cannot
    tell), so those two are simply detached when they are mounted (EINVAL: they are not). A session storage's
    view or slot goes first: the state dir is deleted next, and never through a session's storage."""
    from hangar.sandbox.namespace.storage import detach_views  # storage.py imports this module

    detach_views(state)
    for path in (state.path / "root", state.path / "lower", state.rw):
        if path == state.rw and not os.path.ismount(path):
            continue
        if path != state.rw and not path.is_dir():
            continue
        # SAFETY: detaches only what mount_writable() or image_root.mount_root() mounted on this state dir.
        if _libc().umount2(str(path).encode(), MNT_DETACH) != 0:
            err = ctypes.get_errno()
            if err == errno.EINVAL and path != state.rw:
                continue  # not a mount point (a code sandbox, or a start that failed before mounting it)
            raise OSError(err, f"umount {path}: {os.strerror(err)}")


def write_etc(state: StateDir, local_names: tuple[str, ...] = ()) -> Path:
    """passwd, group, hosts and hostname for the sandbox, root-owned and read-only to it. ``local_names`` resolve to
    127.0.0.1 inside (the outbound names its supervisor serves, such as Hangar's identity endpoint)."""
    etc = state.path / "etc"
    etc.mkdir(mode=0o755)
    _write_files(etc, etc_files(local_names))
    return etc


def shared_etc(root: Path, local_names: tuple[str, ...] = ()) -> Path:
    """``write_etc``'s files in ``root/<hash of their content>``, written once and shared by every cold sandbox with
    the same content (only ``local_names`` differ, per runtime): bound read-only like a sandbox's own, they hold
    nothing of a session. Made atomically (by rename); a directory of that name holds exactly that content."""
    files = etc_files(local_names)
    digest = hashlib.sha256(json.dumps(files, sort_keys=True).encode()).hexdigest()[:32]
    return content_dir(root / digest, lambda building: _write_files(building, files))


def content_dir(target: Path, fill: Callable[[Path], None]) -> Path:
    """``target``, a directory named by a hash of what ``fill`` writes into it, made once: filled under a name of
    this thread's own, then renamed into place (a start that lost the race keeps the winner's, the same content)."""
    if target.is_dir():
        return target
    target.parent.mkdir(mode=0o755, parents=True, exist_ok=True)
    building = target.with_name(f".{target.name}.{os.getpid()}.{threading.get_ident()}.tmp")  # starts run at once
    shutil.rmtree(building, ignore_errors=True)
    building.mkdir(mode=0o755)
    try:
        fill(building)
        try:
            building.rename(target)
        except OSError:
            if not target.is_dir():
                raise
    finally:
        shutil.rmtree(building, ignore_errors=True)
    return target


def _write_files(etc: Path, files: dict[str, str]) -> None:
    for name, text in files.items():
        (etc / name).write_text(text)
        (etc / name).chmod(0o644)


def etc_files(local_names: tuple[str, ...] = ()) -> dict[str, str]:
    """The content of the sandbox's own /etc files, by name (the same for every session of a runtime)."""
    local = "".join(f"127.0.0.1\t{name}\n" for name in local_names)
    return {
        "passwd": f"root:x:0:0:root:/root:/usr/sbin/nologin\nagent:x:{SANDBOX_UID}:{SANDBOX_UID}:agent:{HOME}:/bin/sh\n"
        "nobody:x:65534:65534:nobody:/nonexistent:/usr/sbin/nologin\n",
        "group": f"root:x:0:\nagent:x:{SANDBOX_UID}:\nnogroup:x:65534:\n",
        "hosts": f"127.0.0.1\tlocalhost {HOSTNAME}\n::1\tlocalhost ip6-localhost ip6-loopback\n{local}",
        "hostname": f"{HOSTNAME}\n",
    }


def system_mounts() -> list[str]:
    """/usr read-only, and /bin, /lib, ... as the host has them (symlinks into /usr on merged-/usr systems)."""
    args = ["--ro-bind", "/usr", "/usr"]
    for name in SYSTEM_LINKS:
        host = Path("/") / name
        if host.is_symlink():
            args += ["--symlink", os.readlink(host), f"/{name}"]
        elif host.is_dir():
            args += ["--ro-bind", str(host), f"/{name}"]
    return args


def bwrap_mounts(
    state: StateDir,
    etc: Path,
    code_dir: Path,
    env_dir: Path,
    inside: Path,
    shm_bytes: int,
    outbound: Outbound | None = None,
    extra: list[str] | None = None,
    bytecode: Path | None = None,
) -> list[str]:
    """The bind list, in order: system, /dev with a size-capped /dev/shm, /etc, writable home and /tmp, then env and
    code (which may live under /tmp on the host), Hangar's in-sandbox programs (``inside``: a root-owned directory
    holding supervisor.py, isolate.py and zygote.py), and finally the root itself made read-only. The sockets are
    not in it: the supervisor inherits them as fds. ``outbound``'s root-owned socket directory is bound read-only at
    ``/run/hangar`` (connecting to a socket needs no write access to its mount). ``extra``: the version's
    filesystem mounts (``storage.py``), made before the root turns read-only. ``bytecode``: the programs' compiled
    form (``bytecode.compiled``), bound read-only as their ``__pycache__``."""
    args = system_mounts()
    args += ["--proc", "/proc", "--dev", "/dev", "--size", str(max(shm_bytes, 4096)), "--tmpfs", "/dev/shm"]
    args += ["--dir", "/etc"]
    for name in sorted(p.name for p in etc.iterdir()):
        args += ["--ro-bind", str(etc / name), f"/etc/{name}"]
    for name in ETC_FROM_HOST:
        args += ["--ro-bind-try", f"/etc/{name}", f"/etc/{name}"]
    args += ["--bind", str(state.home), HOME, "--bind", str(state.tmp), "/tmp"]
    args += ["--ro-bind", str(env_dir), str(env_dir), "--ro-bind", str(code_dir), str(code_dir)]
    for program in INSIDE_PROGRAMS:
        args += ["--ro-bind", str(inside / program.name), f"{INSIDE_DIR}/{program.name}"]
    if bytecode is not None:
        args += ["--ro-bind", str(bytecode), f"{INSIDE_DIR}/{BYTECODE_DIR}"]
    if outbound is not None:
        args += ["--ro-bind", str(outbound.socket_dir), OUTBOUND_DIR]
    args += [*(extra or ()), "--remount-ro", "/"]
    return args
