"""The OCI runtime spec (``config.json``) of one gVisor sandbox: the same view of files as a namespace sandbox.

Code sessions see the host's /usr read-only, a minimal /etc, their code and env read-only and a size-capped home and
/tmp (the host tmpfs of ``rootfs.mount_writable``); image sessions see the image's rootfs through the session's
overlay (``image_root.mount_root``). Both get Hangar's in-sandbox programs read-only and two private directories:
one the sandbox binds its sockets in, one holding the host's ready FIFO.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hangar.sandbox.base import OUTBOUND_DIR, Outbound
from hangar.sandbox.namespace import rootfs

EXCHANGE_DIR = "/run/hangar-sandbox"  # inside: ``sock/`` (the sandbox binds there) and ``in/ready`` (the FIFO)
RO = ["ro", "rbind", "nosuid", "nodev"]
RW = ["rw", "rbind", "nosuid", "nodev"]
NOFILE = 65536
# An image's root user may write the image's files as in a container, whose owner the host sees as the session's
# lease (image_root's ID-mapped lower layer): file capabilities only, inside gVisor's kernel. Never CAP_SETUID or
# CAP_SETGID (RLIMIT_NPROC counts per uid: switching uids would multiply the pids limit) nor CAP_SYS_RESOURCE.
IMAGE_ROOT_CAPS = ("CAP_CHOWN", "CAP_DAC_OVERRIDE", "CAP_FOWNER", "CAP_FSETID")


@dataclass(frozen=True)
class Process:
    """Who runs what, where: ``uid``/``gid`` inside, ``args``, ``env``, ``cwd``; ``nproc`` caps its tasks;
    ``capabilities`` inside gVisor (none but an image's root user's file capabilities, see ``IMAGE_ROOT_CAPS``)."""

    uid: int
    gid: int
    args: Sequence[str]
    env: Mapping[str, str]
    cwd: str
    nproc: int
    capabilities: tuple[str, ...] = ()


def bind(source: Path | str, destination: str, options: list[str]) -> dict[str, Any]:
    return {"destination": destination, "type": "bind", "source": str(source), "options": options}


def exchange_mounts(socket_dir: Path, fifo_dir: Path) -> list[dict[str, Any]]:
    # The FIFO's directory is mounted read-write only because gVisor refuses to open a FIFO for writing on a read-only
    # mount; it is root's (0755) and the FIFO the only thing in it.
    return [bind(socket_dir, f"{EXCHANGE_DIR}/sock", RW), bind(fifo_dir, f"{EXCHANGE_DIR}/in", RW)]


def code_mounts(
    etc: Path, home: Path, tmp: Path, code_dir: Path, env_dir: Path, inside: Path, shm_bytes: int
) -> list[dict[str, Any]]:
    """What ``rootfs.bwrap_mounts`` gives a namespace sandbox, as OCI mounts (symlinks such as /bin live in the
    root directory itself, see ``make_code_root``)."""
    mounts = [bind("/usr", "/usr", RO), shm(shm_bytes)]
    mounts += [bind(etc / name, f"/etc/{name}", RO) for name in sorted(p.name for p in etc.iterdir())]
    mounts += [
        bind(f"/etc/{name}", f"/etc/{name}", RO) for name in rootfs.ETC_FROM_HOST if os.path.exists(f"/etc/{name}")
    ]
    mounts += [bind(home, rootfs.HOME, RW), bind(tmp, "/tmp", RW)]
    mounts += [bind(env_dir, str(env_dir), RO), bind(code_dir, str(code_dir), RO)]
    mounts += [bind(inside, rootfs.INSIDE_DIR, RO)]
    return mounts


def shm(size_bytes: int) -> dict[str, Any]:
    return {
        "destination": "/dev/shm",
        "type": "tmpfs",
        "source": "shm",
        "options": ["nosuid", "nodev", "noexec", f"size={max(size_bytes, 4096)}"],
    }


def make_code_root(root: Path) -> None:
    """An empty, root-owned directory as ``/``, with the host's /bin, /lib, ... symlinks into /usr."""
    root.mkdir(mode=0o755)
    for name in rootfs.SYSTEM_LINKS:
        host = Path("/") / name
        if host.is_symlink():
            (root / name).symlink_to(os.readlink(host))
    for name in ("usr", "etc", "home", "tmp", "opt", "proc", "dev", "run"):
        (root / name).mkdir(mode=0o755)


def outbound_mount(outbound: Outbound | None) -> list[dict[str, Any]]:
    return [bind(outbound.socket_dir, OUTBOUND_DIR, RO)] if outbound is not None else []


def runtime_spec(
    *,
    root: Path,
    readonly_root: bool,
    process: Process,
    mounts: list[dict[str, Any]],
    own_network: bool,
) -> dict[str, Any]:
    """The whole ``config.json``: ``process.capabilities`` only, no new privileges, ``nproc`` as RLIMIT_NPROC (gVisor
    enforces it per sandbox, which keeps a fork bomb off the host's pids limit), private pid/ipc/uts/mount namespaces,
    and a new, empty network namespace when ``own_network`` (else runsc stays in the prepared one it started in)."""
    namespaces = [{"type": "pid"}, {"type": "ipc"}, {"type": "uts"}, {"type": "mount"}]
    if own_network:
        namespaces.append({"type": "network"})
    return {
        "ociVersion": "1.0.2",
        "process": {
            "terminal": False,
            "user": {"uid": process.uid, "gid": process.gid},
            "args": list(process.args),
            "env": [f"{key}={value}" for key, value in process.env.items()],
            "cwd": process.cwd,
            "capabilities": {
                "bounding": list(process.capabilities),
                "effective": list(process.capabilities),
                "permitted": list(process.capabilities),
                "inheritable": [],
                "ambient": [],
            },
            "rlimits": [
                {"type": "RLIMIT_NPROC", "hard": process.nproc, "soft": process.nproc},
                {"type": "RLIMIT_NOFILE", "hard": NOFILE, "soft": NOFILE},
            ],
            "noNewPrivileges": True,
        },
        "root": {"path": str(root), "readonly": readonly_root},
        "hostname": rootfs.HOSTNAME,
        "mounts": [{"destination": "/proc", "type": "proc", "source": "proc"}, *mounts],
        "linux": {
            "namespaces": namespaces,
        },
    }
