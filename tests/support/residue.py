"""What one Hangar installation's sandboxes leave on the host: processes, cgroups, mounts, netns, veths, uid leases.

Everything a namespace-backend sandbox owns is named after the installation's tag (``instance_tag(data_dir)``) and
its sandbox id, so a crashed server's sandboxes can be listed from the host alone (``snapshot``), and after the
next start ``residue`` says which of them are still there. Used by the fault tests (kill -9, disk full).
"""

from __future__ import annotations

import contextlib
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

from hangar.sandbox.namespace import network
from hangar.sandbox.namespace.backend import DEFAULT_LEASE_DIR
from hangar.sandbox.namespace.cgroups import detect, list_names
from hangar.sandbox.namespace.uids import UidLeases
from hangar.sandbox.state import instance_tag, list_states

STATE_ROOT = Path("/run/hangar")


@dataclass
class Sandboxes:
    """The sandboxes of one installation found on the host, and the uids they had leased."""

    ids: set[str] = field(default_factory=set)
    uids: set[int] = field(default_factory=set)


def _prefix(data_dir: Path) -> str:
    return f"hangar-{instance_tag(data_dir)}-"


def snapshot(data_dir: Path) -> Sandboxes:
    """Every sandbox of the installation with anything on the host: state dir, cgroup, netns or uid lease."""
    tag, prefix = instance_tag(data_dir), _prefix(data_dir)
    found = Sandboxes()
    found.ids.update(state.sandbox_id for state in list_states(STATE_ROOT / tag))
    layout = detect()
    if layout is not None:
        found.ids.update(name[len(prefix) :] for name in list_names(layout, prefix))
    found.ids.update(name[len(prefix) :] for name in network.list_netns(prefix))
    for uid, sandbox_id in UidLeases(DEFAULT_LEASE_DIR, tag).owned().items():
        found.ids.add(sandbox_id)
        found.uids.add(uid)
    return found


def _uid_of(proc: Path) -> int | None:
    with contextlib.suppress(OSError, ValueError, IndexError):
        for line in (proc / "status").read_text().splitlines():
            if line.startswith("Uid:"):
                return int(line.split()[1])
    return None


def _zombie(proc: Path) -> bool:
    with contextlib.suppress(OSError, IndexError):
        return (proc / "stat").read_text().rpartition(")")[2].split()[0] == "Z"
    return False


def processes(old: Sandboxes, data_dir: Path) -> list[str]:
    """Live processes of ``old``: in one of their cgroups, naming them on the command line, or running as one of
    their uids while no sandbox of the installation leases that uid now."""
    leased_now = set(UidLeases(DEFAULT_LEASE_DIR, instance_tag(data_dir)).owned())
    stale_uids = old.uids - leased_now
    needles = [f"{_prefix(data_dir)}{sandbox_id}" for sandbox_id in old.ids] + sorted(old.ids)
    found = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            text = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            text += " " + (proc / "cgroup").read_text(errors="replace")
        except OSError:
            continue
        if _zombie(proc):
            continue  # dead, waiting for its reaper: holds nothing but a pid
        uid = _uid_of(proc)
        if any(needle in text for needle in needles) or (uid is not None and uid in stale_uids):
            found.append(f"process {proc.name} (uid {uid}): {text.strip()[:160]}")
    return found


def residue(old: Sandboxes, data_dir: Path) -> list[str]:
    """Everything of the sandboxes ``old`` still on the host (empty when they were cleaned up completely)."""
    tag, prefix = instance_tag(data_dir), _prefix(data_dir)
    found = processes(old, data_dir)
    layout = detect()
    if layout is not None:
        found += [f"cgroup {name}" for name in list_names(layout, prefix) if name[len(prefix) :] in old.ids]
    found += [f"netns {name}" for name in network.list_netns(prefix) if name[len(prefix) :] in old.ids]
    found += [f"veth {network.names(tag, i)[1]} of {i}" for i in old.ids if _link_exists(network.names(tag, i)[1])]
    found += [f"uid lease {uid} of {i}" for uid, i in UidLeases(DEFAULT_LEASE_DIR, tag).owned().items() if i in old.ids]
    found += [f"state dir {s.path}" for s in list_states(STATE_ROOT / tag) if s.sandbox_id in old.ids]
    found += [f"mount {point}" for point in mounts_under(data_dir, *(STATE_ROOT / tag / i for i in old.ids))]
    return found


def _link_exists(name: str) -> bool:
    if Path("/sys/class/net", name).exists():
        return True
    done = subprocess.run(["ip", "-o", "link", "show", name], capture_output=True, text=True, check=False)
    return done.returncode == 0


def mounts_under(*roots: Path) -> list[str]:
    """Mount points of this mount namespace at or below any of ``roots`` (field 5 of /proc/self/mountinfo)."""
    points = [line.split()[4] for line in Path("/proc/self/mountinfo").read_text().splitlines()]
    wanted = [str(root.resolve()) if root.exists() else str(root) for root in roots]
    return [p for p in points if any(p == r or p.startswith(r + "/") for r in wanted)]


def settled(old: Sandboxes, data_dir: Path, timeout: float = 60.0) -> list[str]:
    """``residue`` once it is empty, or what is still there after ``timeout`` (cleanup runs at the server's start,
    and a stopping sandbox takes a moment to leave)."""
    deadline = time.monotonic() + timeout
    while (left := residue(old, data_dir)) and time.monotonic() < deadline:
        time.sleep(0.2)
    return left
