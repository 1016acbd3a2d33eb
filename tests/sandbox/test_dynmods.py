"""The server sets ``favordynmods`` on the host's cgroup2 mount (cold launches join their cgroups without an RCU
grace period), keeping that mount's other flags and options; reading mountinfo finds the right mount."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from hangar.sandbox.namespace import dynmods
from hangar.sandbox.namespace.dynmods import Cgroup2Mount, find_cgroup2, reconfigured_flags
from tests.support.server import HangarServer

NO_CGROUP2 = "the host has no cgroup2 mount"

HYBRID = """\
31 23 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755
32 31 0:29 / /sys/fs/cgroup/cpu rw,relatime - cgroup cgroup rw,cpu
39 31 0:36 / /sys/fs/cgroup/pids rw,relatime - cgroup cgroup rw,pids
41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw
"""
SYSTEMD_V2 = (
    "35 24 0:30 / /sys/fs/cgroup rw,nosuid,nodev,noexec,relatime shared:9 - cgroup2 cgroup2 "
    "rw,nsdelegate,memory_recursiveprot\n"
)
PURE_V1 = "32 31 0:29 / /sys/fs/cgroup/cpu rw,relatime - cgroup cgroup rw,cpu\n"


def test_finds_the_cgroup2_mount_and_its_flags() -> None:
    assert find_cgroup2(HYBRID) == Cgroup2Mount("/sys/fs/cgroup/unified", ())
    assert find_cgroup2(SYSTEMD_V2) == Cgroup2Mount("/sys/fs/cgroup", ("nsdelegate", "memory_recursiveprot"))
    assert find_cgroup2(PURE_V1) is None
    escaped = "50 31 0:40 / /run/my\\040cg rw - cgroup2 none rw,favordynmods\n"
    assert find_cgroup2(escaped) == Cgroup2Mount("/run/my cg", ("favordynmods",))


def test_reconfiguration_keeps_every_flag() -> None:
    """A reconfiguration clears the flags it is not given: nsdelegate and the rest go again, with favordynmods."""
    mount = Cgroup2Mount("/sys/fs/cgroup", ("nsdelegate", "memory_recursiveprot"))
    assert reconfigured_flags(mount) == ("nsdelegate", "memory_recursiveprot", "favordynmods")
    assert reconfigured_flags(Cgroup2Mount("/x", ("nsdelegate", "favordynmods"))) is None


def _host_mount() -> tuple[Cgroup2Mount, str]:
    """This host's cgroup2 mount and its per-mount options (the field a superblock reconfiguration must not touch)."""
    text = Path("/proc/self/mountinfo").read_text()
    mount = find_cgroup2(text)
    if mount is None:
        pytest.skip(NO_CGROUP2)
    line = next(line for line in text.splitlines() if " - cgroup2 " in line)
    return mount, line.split()[5]


def _clear() -> None:
    """Take favordynmods off again (its other flags kept), so that setting it is observable (on Linux 6.18+ the
    per-process lock it enabled stays; only the flag goes)."""
    mount, _ = _host_mount()
    if dynmods.FLAG in mount.flags:
        dynmods._reconfigure(mount.path, tuple(flag for flag in mount.flags if flag != dynmods.FLAG))
    # not asserted cleared: another server of a parallel run may set it again at any moment


@pytest.fixture
def host_mount() -> tuple[Cgroup2Mount, str]:
    if os.geteuid() != 0:
        pytest.skip("needs root (reconfigures the host's cgroup2 mount)")
    return _host_mount()


def test_sets_the_flag_on_the_real_mount(host_mount: tuple[Cgroup2Mount, str]) -> None:
    before, options = host_mount
    _clear()
    # "already set": another server on this host (one of a parallel run's) may have set it since _clear
    assert dynmods.favor_dynmods().startswith(("set on ", "already set on "))
    after, options_after = _host_mount()
    assert dynmods.FLAG in after.flags
    assert set(after.flags) == {*before.flags, dynmods.FLAG}  # its other flags kept
    assert options_after == options  # nosuid/nodev/noexec/relatime of the mount itself untouched
    assert dynmods.favor_dynmods().startswith("already set")


def test_the_server_sets_it_at_start(host_mount: tuple[Cgroup2Mount, str], tmp_path: Path) -> None:
    """``hangar serve`` with the default settings (``cgroup_favor_dynmods`` on) sets it before it serves."""
    _clear()
    server = HangarServer(tmp_path / "data").start()
    try:
        assert dynmods.FLAG in _host_mount()[0].flags
        mount = _host_mount()[0].path
        said = [line for line in server.log().splitlines() if "favordynmods" in line]
        assert said and said[0].endswith((f": set on {mount}", f": already set on {mount}")), said
    finally:
        server.stop()
