"""cgroup layouts: the live one on this host, and the v2 file names checked on a directory shaped like a v2 root.

This machine type has only v1 controllers, so the v2 path is checked here for what Hangar writes and reads (names
and formats from the kernel's cgroup-v2 documentation); the attacker suite proves the limits on the live layout.
"""

from __future__ import annotations

from pathlib import Path

import pytest

cgroups = pytest.importorskip("hangar.sandbox.namespace.cgroups")
from hangar.sandbox.base import Limits  # noqa: E402

LIMITS = Limits(memory_bytes=96 << 20, cpus=0.25, pids=40, disk_bytes=1 << 20)


def v2_root(tmp_path: Path) -> Path:
    (tmp_path / "cgroup.controllers").write_text("cpuset cpu io memory hugetlb pids rdma misc\n")
    return tmp_path


def test_v2_is_detected_and_written_with_v2_names(tmp_path: Path) -> None:
    layout = cgroups.detect(v2_root(tmp_path))
    assert layout is not None and layout.version == 2
    group = cgroups.Cgroup(layout, "hangar-x-sb")
    group.create(LIMITS)
    path = tmp_path / "hangar-x-sb"
    assert (path / "memory.max").read_text() == str(96 << 20)
    assert (path / "memory.swap.max").read_text() == "0"
    assert (path / "pids.max").read_text() == "40"
    assert (path / "cpu.max").read_text() == "25000 100000"
    assert group.procs_files() == [str(path / "cgroup.procs")]
    (path / "memory.current").write_text("12345\n")
    (path / "pids.current").write_text("7\n")
    (path / "cpu.stat").write_text("usage_usec 2500000\nnr_throttled 3\n")
    (path / "memory.events").write_text("low 0\nhigh 0\nmax 4\noom 1\noom_kill 1\n")
    assert (group.memory_bytes(), group.pid_count(), group.cpu_seconds()) == (12345, 7, 2.5)
    assert (group.cpu_throttled(), group.oom_kills()) == (3, 1)
    assert cgroups.list_names(layout, "hangar-x-") == ["hangar-x-sb"]


def test_v2_without_the_controllers_is_not_used(tmp_path: Path) -> None:
    (tmp_path / "cgroup.controllers").write_text("hugetlb\n")  # like this host's hybrid 'unified' tree
    assert cgroups.detect(tmp_path) is None


@pytest.mark.anyio
async def test_live_layout_applies_and_removes_limits() -> None:
    layout = cgroups.detect()
    if layout is None:
        pytest.skip("no usable cgroup controllers on this host")
    group = cgroups.Cgroup(layout, "hangar-test-live-limits")
    try:
        group.create(LIMITS)
        if layout.version == 1:
            assert int((group.paths["memory"] / "memory.limit_in_bytes").read_text()) == 96 << 20
            assert (group.paths["cpu"] / "cpu.cfs_quota_us").read_text().strip() == "25000"
        assert (group.paths["pids"] / "pids.max").read_text().strip() == "40"
        assert group.pids() == []
    finally:
        await group.kill_all()
        await group.remove()
    assert all(not p.exists() for p in group.unique_paths())
