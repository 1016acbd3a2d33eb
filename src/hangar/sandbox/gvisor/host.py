"""What the gVisor backend needs of the host: a working ``runsc``, and the sandbox's sockets made safe to connect to.

The sandbox binds its agent and control sockets in a directory it may write (it has to, to bind), so it could swap
one for a symlink to any host socket. The host therefore never connects by that path: once the sandbox is ready it
opens each socket without following links, checks that it is a socket, and bind-mounts that very inode onto a file
in the state dir's ``run/`` (root's, invisible to the sandbox), which is where the gateway connects.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import errno
import os
import shutil
import stat
import subprocess
import sys
import tempfile
from functools import cache
from pathlib import Path

MS_BIND = 0x1000
MNT_DETACH = 0x2
PROBE_TIMEOUT_S = 60.0


@cache
def _libc() -> ctypes.CDLL:
    # SAFETY: the C library is always loaded in this process; mount/umount2 signatures are declared before use.
    libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
    libc.mount.argtypes = [ctypes.c_char_p, ctypes.c_char_p, ctypes.c_char_p, ctypes.c_ulong, ctypes.c_char_p]
    libc.umount2.argtypes = [ctypes.c_char_p, ctypes.c_int]
    return libc


class SocketSwapped(RuntimeError):
    """What the sandbox left at a socket's path is not a socket (a symlink, a file, nothing)."""


def expose_socket(source: Path, target: Path) -> None:
    """Bind-mount the socket at ``source`` (never following a link) onto a new file ``target``."""
    try:
        fd = os.open(source, os.O_PATH | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError as exc:
        raise SocketSwapped(f"{source.name}: {exc.strerror}") from exc
    try:
        if not stat.S_ISSOCK(os.fstat(fd).st_mode):
            raise SocketSwapped(f"{source.name} is not a socket")
        os.close(os.open(target, os.O_CREAT | os.O_EXCL | os.O_WRONLY | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600))
        # SAFETY: binds the inode just checked to be a socket (through its O_PATH fd, so no path the sandbox controls
        # is resolved) onto a file we just created in the root-only run dir; hide_socket() detaches it.
        if _libc().mount(f"/proc/self/fd/{fd}".encode(), str(target).encode(), None, MS_BIND, None) != 0:
            err = ctypes.get_errno()
            raise OSError(err, f"bind {source} to {target}: {os.strerror(err)}")
    finally:
        os.close(fd)


def hide_socket(target: Path) -> None:
    """Detach what ``expose_socket`` mounted on ``target``, if anything (idempotent)."""
    # SAFETY: detaches a mount on a path inside our own state dir's root-only run dir, nothing else.
    if _libc().umount2(str(target).encode(), MNT_DETACH) != 0:
        err = ctypes.get_errno()
        if err not in (errno.EINVAL, errno.ENOENT):
            raise OSError(err, f"umount {target}: {os.strerror(err)}")


def runsc_path(configured: str) -> str | None:
    return shutil.which(configured)


@cache
def unsupported_reason(runsc: str, platform: str) -> str | None:
    """Why gVisor cannot run sandboxes here (None when it can): runsc missing, not root, or a trial sandbox
    (``runsc do true`` on the configured platform) that fails, with runsc's own words."""
    if not sys.platform.startswith("linux"):
        return f"gVisor needs Linux (this is {sys.platform})"
    found = runsc_path(runsc)
    if found is None:
        return f"runsc ({runsc}) is not installed: apt-get install -y runsc"
    if os.geteuid() != 0:
        return "the gvisor backend runs runsc as root (hangar serve must run as root)"
    with tempfile.TemporaryDirectory(prefix="hangar-runsc-probe-") as state:
        argv = [found, f"--root={state}", f"--platform={platform}", "--network=none", "do", "true"]
        try:
            done = subprocess.run(argv, capture_output=True, timeout=PROBE_TIMEOUT_S, cwd=state, check=False)
        except (OSError, subprocess.TimeoutExpired) as exc:
            return f"runsc could not run a trial sandbox: {exc}"
    if done.returncode != 0:
        said = (done.stderr or done.stdout).decode(errors="replace").strip().splitlines()
        return f"runsc could not run a trial sandbox on platform {platform} (exit {done.returncode}): " + (
            said[-1] if said else "no output"
        )
    return None
