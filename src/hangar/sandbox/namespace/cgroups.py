"""Resource limits through cgroups, v1 (one hierarchy per controller) or v2 (one unified tree), detected at start.

Every sandbox gets one cgroup named ``hangar-<tag>-<sandbox_id>`` in each hierarchy, so a later Hangar process
finds what an earlier one left by listing names. The launcher writes its own pid into ``procs_files()`` before it
execs bwrap: the whole tree starts inside the limits.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
from dataclasses import dataclass
from pathlib import Path

from hangar.sandbox.base import Limits

CGROUP_ROOT = Path("/sys/fs/cgroup")
V1_CONTROLLERS = ("memory", "pids", "cpu", "cpuacct", "freezer")
V1_REQUIRED = ("memory", "pids", "cpu")
V2_REQUIRED = ("memory", "pids", "cpu")
CPU_PERIOD_US = 100_000
KILL_ROUNDS = 200
KILL_PAUSE_S = 0.005


@dataclass(frozen=True)
class CgroupLayout:
    """Where cgroups go on this host: ``version`` 1 with one directory per controller, or 2 with one parent."""

    version: int
    dirs: dict[str, Path]  # controller -> parent directory (v2: every controller maps to the same directory)


def detect(root: Path = CGROUP_ROOT) -> CgroupLayout | None:
    """The usable layout, or None: v2 when its root delegates the controllers, else v1 when they are mounted."""
    unified = root / "cgroup.controllers"
    if unified.exists() and set(V2_REQUIRED) <= set(unified.read_text().split()):
        return CgroupLayout(2, dict.fromkeys(V2_REQUIRED, root))
    v1 = {c: root / c for c in V1_CONTROLLERS if (root / c / "cgroup.procs").exists()}
    if all(c in v1 for c in V1_REQUIRED) and all(os.access(p, os.W_OK) for p in v1.values()):
        return CgroupLayout(1, v1)
    return None


class Cgroup:
    """The cgroup(s) of one sandbox."""

    def __init__(self, layout: CgroupLayout, name: str) -> None:
        self.layout = layout
        self.name = name
        self.paths = {c: parent / name for c, parent in layout.dirs.items()}

    def unique_paths(self) -> list[Path]:
        return sorted(set(self.paths.values()))

    def create(self, limits: Limits) -> None:
        for path in self.unique_paths():
            path.mkdir(exist_ok=True)
        if self.layout.version == 2:
            self._write("memory", "memory.max", limits.memory_bytes)
            self._write("memory", "memory.swap.max", 0, optional=True)
            self._write("pids", "pids.max", limits.pids)
        else:
            self._write("memory", "memory.limit_in_bytes", limits.memory_bytes)
            self._write("memory", "memory.memsw.limit_in_bytes", limits.memory_bytes, optional=True)
            self._write("pids", "pids.max", limits.pids)
            self._write("cpu", "cpu.cfs_period_us", CPU_PERIOD_US)
        self.set_cpus(limits.cpus)

    def set_cpus(self, cpus: float | None) -> None:
        """The CPU quota: ``cpus`` CPUs per period, or None for no quota (a cold start's, until its supervisor is
        ready: the supervisor's imports then do not eat into the agent's start under one quota)."""
        quota = None if cpus is None else max(1000, int(cpus * CPU_PERIOD_US))
        if self.layout.version == 2:
            self._write("cpu", "cpu.max", f"{'max' if quota is None else quota} {CPU_PERIOD_US}")
        else:
            self._write("cpu", "cpu.cfs_quota_us", -1 if quota is None else quota)

    def cpu_quota(self) -> float | None:
        """The CPU quota in CPUs, None when there is none (what ``set_cpus`` wrote)."""
        if self.layout.version == 2:
            quota, _, period = self._read("cpu", "cpu.max").strip().partition(" ")
            return None if quota == "max" else int(quota) / int(period)
        quota_us = int(self._read("cpu", "cpu.cfs_quota_us").strip())
        return None if quota_us < 0 else quota_us / self._read_int("cpu", "cpu.cfs_period_us")

    def procs_files(self) -> list[str]:
        return [str(path / "cgroup.procs") for path in self.unique_paths()]

    def pids(self) -> list[int]:
        found: set[int] = set()
        for path in self.unique_paths():
            with contextlib.suppress(OSError):
                found.update(int(line) for line in (path / "cgroup.procs").read_text().split())
        return sorted(found)

    def memory_bytes(self) -> int:
        name = "memory.current" if self.layout.version == 2 else "memory.usage_in_bytes"
        return self._read_int("memory", name)

    def pid_count(self) -> int:
        return self._read_int("pids", "pids.current")

    def cpu_seconds(self) -> float:
        if self.layout.version == 2:
            for line in self._read("cpu", "cpu.stat").splitlines():
                key, _, value = line.partition(" ")
                if key == "usage_usec":
                    return int(value) / 1e6
            return 0.0
        if "cpuacct" in self.paths:
            return self._read_int("cpuacct", "cpuacct.usage") / 1e9
        return 0.0

    def cpu_throttled(self) -> int:
        """How many CPU periods the quota throttled the sandbox (``nr_throttled``)."""
        for line in self._read("cpu", "cpu.stat").splitlines():
            key, _, value = line.partition(" ")
            if key == "nr_throttled":
                return int(value)
        return 0

    def oom_kills(self) -> int:
        name = "memory.events" if self.layout.version == 2 else "memory.oom_control"
        for line in self._read("memory", name).splitlines():
            key, _, value = line.partition(" ")
            if key == "oom_kill":
                return int(value)
        return 0

    async def kill_all(self) -> None:
        """SIGKILL every process in the cgroup until it is empty (bounded); frozen first, so nothing forks away.

        A cgroup already empty (a stop whose tree exited on its SIGTERM) is left as it is: nothing in it can fork,
        and only the host moves processes into it (no freeze and thaw writes on every stop)."""
        if not self.pids():
            return
        if self.layout.version == 2 and (self.paths["pids"] / "cgroup.kill").exists():
            self._write("pids", "cgroup.kill", 1, optional=True)
        if self._freeze(True):
            self.signal_all(signal.SIGKILL)
            self._freeze(False)  # a v1-frozen task dies only once thawed; its SIGKILL is already pending
        for _ in range(KILL_ROUNDS):
            if not self.signal_all(signal.SIGKILL):
                return
            await asyncio.sleep(KILL_PAUSE_S)

    def signal_all(self, signum: int, spare: str | None = None) -> int:
        """Send ``signum`` to every process in the cgroup, except those whose command name is ``spare``."""
        pids = self.pids()
        for pid in pids:
            if spare is not None and _comm(pid) == spare:
                continue
            with contextlib.suppress(ProcessLookupError):
                # SAFETY: pids read from this sandbox's own cgroup.procs: nothing outside the sandbox is ever signalled.
                os.kill(pid, signum)
        return len(pids)

    async def remove(self) -> None:
        """rmdir every directory (bounded retries: an emptied cgroup takes a moment to let go)."""
        for path in self.unique_paths():
            for _ in range(KILL_ROUNDS):
                try:
                    path.rmdir()
                    break
                except FileNotFoundError:
                    break
                except OSError:
                    await asyncio.sleep(KILL_PAUSE_S)

    def _freeze(self, frozen: bool) -> bool:
        if self.layout.version == 2:
            return self._write("pids", "cgroup.freeze", int(frozen), optional=True)
        if "freezer" not in self.paths:
            return False
        return self._write("freezer", "freezer.state", "FROZEN" if frozen else "THAWED", optional=True)

    def _write(self, controller: str, name: str, value: object, optional: bool = False) -> bool:
        try:
            # SAFETY: writes only inside this sandbox's own hangar-<tag>-<id> cgroup directories.
            (self.paths[controller] / name).write_text(str(value))
        except OSError:
            if not optional:
                raise
            return False
        return True

    def _read(self, controller: str, name: str) -> str:
        try:
            return (self.paths[controller] / name).read_text()
        except OSError:
            return ""

    def _read_int(self, controller: str, name: str) -> int:
        text = self._read(controller, name).strip()
        return int(text) if text.isdigit() else 0


def _comm(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/comm").read_text().strip()
    except OSError:
        return ""


def list_names(layout: CgroupLayout, prefix: str) -> list[str]:
    """Names of the cgroups starting with ``prefix`` in any hierarchy (how orphans are found after a crash)."""
    names: set[str] = set()
    for parent in set(layout.dirs.values()):
        with contextlib.suppress(FileNotFoundError):
            names.update(p.name for p in parent.iterdir() if p.is_dir() and p.name.startswith(prefix))
    return sorted(names)
