"""Cold launches from the launch namespace (``sandbox/namespace/launch_ns.py``): bwrap copies a mount table without
any sandbox's mounts, the sandbox gets the same view from the same files, and a source the launch namespace lacks
sends that launch through the host's namespace as before (and the next one through a fresh launch namespace).
"""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from hangar.sandbox.namespace.launch_holder import sandbox_mounts
from hangar.sandbox.namespace.launch_ns import HOST_NS, LaunchNamespace, bind_sources
from hangar.sandbox.namespace.launcher import GATED_ENTER
from hangar.sandbox.selection import namespace_unsupported_reason
from tests.sandbox.fixtures import AgentFiles, make_backend, run_exec, started, wait_ping, world_readable_dir

pytestmark = [
    pytest.mark.skipif(namespace_unsupported_reason() is not None, reason=str(namespace_unsupported_reason())),
]
MOUNTINFO = """\
27 1 254:0 / / rw,relatime - ext4 /dev/vda rw
22 27 0:21 / /proc rw,relatime - proc proc rw
46 27 254:0 /run/netns /run/netns rw,relatime shared:1 - ext4 /dev/vda rw
47 46 0:4 net:[4026532175] /run/netns/hangar-a-hs-1 rw shared:2 - nsfs nsfs rw
59 27 0:94 / /run/hangar/a/hs-1/rw rw,nosuid,nodev,relatime - tmpfs hangar-sandbox rw,size=524288k
60 27 0:95 / /run/hangar/a/hs-1/root rw,relatime - overlay hangar-image rw
61 27 254:0 /store /run/hangar/a/hs-1/lower ro,relatime - ext4 /dev/vda rw
62 27 254:0 /srv/slots /srv/state/.slots rw,relatime shared:9 - ext4 /dev/vda rw
63 27 0:96 / /srv/state rw,relatime - tmpfs tmpfs rw
64 27 0:97 / /srv/data\\040dir rw,relatime - tmpfs tmpfs rw
65 27 7:3 / /var/lib/hangar/storage/ab/mnt rw,nosuid,nodev,noatime - ext4 /dev/loop3 rw
"""


def test_the_holder_drops_every_sandbox_mount_and_keeps_the_hosts_own() -> None:
    dropped = sandbox_mounts(MOUNTINFO, ["/srv/state"])
    assert set(dropped) == {
        "/run/netns/hangar-a-hs-1",
        "/run/hangar/a/hs-1/rw",
        "/run/hangar/a/hs-1/root",
        "/run/hangar/a/hs-1/lower",
        "/srv/state/.slots",
        "/var/lib/hangar/storage/ab/mnt",
    }
    depths = [point.count("/") for point in dropped]
    assert depths == sorted(depths, reverse=True)  # submounts before what they sit on


def test_bind_sources_are_read_from_bwraps_arguments() -> None:
    args = b"\0".join([b"--ro-bind", b"/usr", b"/usr", b"--dir", b"/etc", b"--ro-bind-try", b"/x", b"/y", b"--bind"])
    assert bind_sources(args + b"\0/a\0/b\0") == ["/usr", "/x", "/a"]


@pytest.mark.parametrize(("said", "code"), [(b"1 /proc/self/ns/mnt\n", 0), (b"1 /etc/passwd\n", 125), (b"1\n", 125)])
def test_the_gate_names_a_mount_namespace_or_the_launcher_ends(said: bytes, code: int) -> None:
    read, gate = os.pipe()
    try:
        argv = ["/bin/sh", "-c", GATED_ENTER, "hangar-launch", "0", "nsenter", "/bin/echo", "ran"]
        proc = subprocess.Popen(argv, stdin=read, stdout=subprocess.PIPE)
    finally:
        os.close(read)
    try:
        os.write(gate, said)
    finally:
        os.close(gate)
    out, _ = proc.communicate(timeout=30)
    assert (proc.returncode, out) == (code, b"ran\n" if code == 0 else b"")


@pytest.fixture
def state_root() -> Iterator[Path]:
    root = world_readable_dir("hangar-launchns-")
    yield root
    asyncio.run(make_backend("namespace", root).cleanup_orphans())
    shutil.rmtree(root, ignore_errors=True)


def _mount_ns(pid: int) -> str:
    return os.readlink(f"/proc/{pid}/ns/mnt")


def _launched_from(sandbox: object) -> set[str]:
    """The mount namespaces of the sandbox's bwrap processes (the outer one stays where it was launched)."""
    pids = sandbox.cgroup.pids()  # type: ignore[attr-defined]
    return {_mount_ns(pid) for pid in pids if Path(f"/proc/{pid}/comm").read_text().strip() == "bwrap"}


def _mountinfo(pid: int) -> str:
    return Path(f"/proc/{pid}/mountinfo").read_text()


@pytest.mark.anyio
async def test_a_cold_sandbox_launches_from_a_namespace_without_other_sandboxes_mounts(
    state_root: Path, agent_files: AgentFiles
) -> None:
    backend = make_backend("namespace", state_root)
    async with started(backend, agent_files.spec()) as first, started(backend, agent_files.spec()) as second:
        assert (await wait_ping(first)).status_code == 200
        assert (await wait_ping(second)).status_code == 200
        holder = backend.launch_ns.holder_pid  # type: ignore[attr-defined]
        assert holder is not None
        assert _mount_ns(holder) in _launched_from(second)
        assert _mount_ns(holder) != _mount_ns(os.getpid())
        host, launch = _mountinfo(os.getpid()), _mountinfo(holder)
        for sandbox in (first, second):
            assert f"{sandbox.state.path}/rw " in host  # type: ignore[attr-defined]
        assert "hangar-sandbox" not in launch and " nsfs " not in launch  # detached once each supervisor ran
        assert str(state_root) not in launch
        # The sandbox's writable home is its own tmpfs on the host (the attached tree was the real one).
        _, err, code, _ = await run_exec(second, "echo written > $HOME/proof")
        assert code == 0, err
        assert (second.state.home / "proof").read_text() == "written\n"  # type: ignore[attr-defined]


@pytest.mark.anyio
async def test_a_source_the_launch_namespace_lacks_sends_the_launch_through_the_hosts_namespace(
    state_root: Path, agent_files: AgentFiles
) -> None:
    """The agent's code on a mount made after the holder started: that launch uses the host's namespace (the
    agent runs as before), and the next one a fresh launch namespace that has the mount."""
    backend = make_backend("namespace", state_root)
    async with started(backend, agent_files.spec()) as first:
        assert (await wait_ping(first)).status_code == 200
    holder = backend.launch_ns.holder_pid  # type: ignore[attr-defined]
    assert holder is not None
    code = world_readable_dir("hangar-launchns-code-")
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m,mode=0755", "launchns-test-code", str(code)], check=True)
    try:
        shutil.copy(agent_files.code_dir / "main.py", code / "main.py")
        (code / "main.py").chmod(0o644)
        moved = AgentFiles(env_dir=agent_files.env_dir, code_dir=code)
        async with started(backend, moved.spec()) as fallback:
            assert (await wait_ping(fallback)).status_code == 200
            assert _launched_from(fallback) >= {_mount_ns(os.getpid())}
        async with started(backend, moved.spec()) as again:
            assert (await wait_ping(again)).status_code == 200
            fresh = backend.launch_ns.holder_pid  # type: ignore[attr-defined]
            assert fresh is not None and fresh != holder
            assert _mount_ns(fresh) in _launched_from(again)
    finally:
        subprocess.run(["umount", "-l", str(code)], check=False)
        shutil.rmtree(code, ignore_errors=True)


def test_a_retired_holder_lives_until_its_last_launch_has_left(tmp_path: Path) -> None:
    """A launch that falls back starts the next holder afresh, but a launch still attached in the old one (its
    launcher has not entered it yet) keeps it: it ends once that launch leaves."""
    launch = LaunchNamespace([])
    first, second = tmp_path / "first", tmp_path / "second"
    first.mkdir()
    second.mkdir()
    later = tmp_path / "later"
    later.mkdir()
    try:
        assert launch.enter(first, b"--ro-bind\0/usr\0/usr\0") != HOST_NS
        holder = launch.holder_pid
        assert holder is not None
        subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4k", "launchns-test", str(later)], check=True)
        assert launch.enter(second, f"--ro-bind\0{later}\0/x\0".encode()) == HOST_NS
        assert launch.holder_pid is None
        assert Path(f"/proc/{holder}/ns/mnt").exists()  # retired, not ended: ``first`` may still enter it
        launch.leave(first)
        assert not Path(f"/proc/{holder}").exists()  # ended and reaped
        assert launch.enter(second, f"--ro-bind\0{later}\0/x\0".encode()) != HOST_NS  # a fresh copy has the mount
        launch.leave(second)
    finally:
        launch.close()
        subprocess.run(["umount", "-l", str(later)], check=False)
