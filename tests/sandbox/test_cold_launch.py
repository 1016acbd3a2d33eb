"""The gated cold launch: the launcher joins the sandbox's cgroups while the host makes its network, and goes on
into the sandbox only when the host says ``1`` on the gate (its stdin); a network that fails leaves nothing.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from hangar.sandbox.base import Limits
from hangar.sandbox.namespace import network
from hangar.sandbox.namespace.cgroups import Cgroup, detect, list_names
from hangar.sandbox.namespace.launcher import GATED_JOIN
from hangar.sandbox.selection import namespace_unsupported_reason
from tests.sandbox.fixtures import AgentFiles, eventually, make_backend, processes_with_env, world_readable_dir

pytestmark = [
    pytest.mark.skipif(namespace_unsupported_reason() is not None, reason=str(namespace_unsupported_reason())),
]
REPORT = "readlink /proc/self/fd/0; echo ran"


def _gated(procs_files: list[str], command: str) -> tuple[subprocess.Popen[bytes], int]:
    read, gate = os.pipe()
    try:
        argv = ["/bin/sh", "-c", GATED_JOIN, "hangar-launch", str(len(procs_files)), *procs_files]
        proc = subprocess.Popen([*argv, "/bin/sh", "-c", command], stdin=read, stdout=subprocess.PIPE)
    finally:
        os.close(read)
    return proc, gate


@pytest.fixture
def cgroup() -> Iterator[Cgroup]:
    layout = detect()
    assert layout is not None
    made = Cgroup(layout, f"hangar-gatetest-{uuid.uuid4().hex[:8]}")
    made.create(Limits(memory_bytes=64 << 20, cpus=0.5, pids=16, disk_bytes=0))
    try:
        yield made
    finally:
        asyncio.run(made.kill_all())
        asyncio.run(made.remove())


def test_the_launcher_joins_its_cgroups_before_the_gate_and_runs_the_command_only_after_it(cgroup: Cgroup) -> None:
    proc, gate = _gated(cgroup.procs_files(), REPORT)
    try:
        assert asyncio.run(eventually(lambda: proc.pid in cgroup.pids())), "the join waits for nothing"
        assert proc.poll() is None  # joined, and waiting at the gate
        os.write(gate, b"1\n")
    finally:
        os.close(gate)
    out, _ = proc.communicate(timeout=10)
    assert proc.returncode == 0
    assert out.decode().split() == ["/dev/null", "ran"]  # the gate is not passed on: stdin is /dev/null


@pytest.mark.parametrize("said", [b"", b"0\n", b"11\n"])
def test_a_gate_closed_without_a_1_ends_the_launcher_before_its_command(cgroup: Cgroup, said: bytes) -> None:
    proc, gate = _gated(cgroup.procs_files(), REPORT)
    try:
        os.write(gate, said)
    finally:
        os.close(gate)
    out, _ = proc.communicate(timeout=10)
    assert proc.returncode == 125
    assert out == b""


def _processes_naming(text: str) -> list[int]:
    """Host pids whose command line holds ``text`` (a launcher names its sandbox's cgroups until it execs on)."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if text.encode() in (entry / "cmdline").read_bytes():
                    found.append(int(entry.name))
            except OSError:
                continue
    return found


def _nothing_left(backend: object, state_root: Path, sandbox_id: str) -> None:
    tag = backend.tag  # type: ignore[attr-defined]
    assert not (state_root / sandbox_id).exists()
    assert not (network.NETNS_DIR / network.names(tag, sandbox_id)[0]).exists()
    assert list_names(backend.layout, f"hangar-{tag}-{sandbox_id}") == []  # type: ignore[attr-defined]
    assert sandbox_id not in backend.leases.owned().values()  # type: ignore[attr-defined]
    assert _processes_naming(sandbox_id) == []  # the launcher is gone too


@pytest.fixture
def state_root() -> Iterator[Path]:
    root = world_readable_dir("hangar-gate-")
    yield root
    asyncio.run(make_backend("namespace", root).cleanup_orphans())
    shutil.rmtree(root, ignore_errors=True)


@pytest.mark.anyio
async def test_a_public_start_whose_network_fails_leaves_nothing_behind(
    state_root: Path, agent_files: AgentFiles
) -> None:
    """The sandbox's host link name is taken (a link of that name exists), so making its network fails while the
    launcher already waits at the gate: the start fails, and nothing of the sandbox remains or runs (the test's
    own link is deleted by the lease's release, which removes whatever link carries the sandbox's name)."""
    backend = make_backend("namespace", state_root, egress="allow")
    value = uuid.uuid4().hex
    spec = agent_files.spec(network="public", environment={"HANGAR_GATE_MARKER": value})
    _, host_if = network.names(backend.tag, spec.sandbox_id)  # type: ignore[attr-defined]
    peer = f"gt{uuid.uuid4().hex[:10]}"  # no sandbox's name (those start with hg)
    subprocess.run(["ip", "link", "add", host_if, "type", "veth", "peer", "name", peer], check=True)
    try:
        with pytest.raises(network.NetworkError):
            await backend.start(spec)
        await backend.settle()
        _nothing_left(backend, state_root, spec.sandbox_id)
        assert processes_with_env(f"HANGAR_GATE_MARKER={value}") == []  # neither supervisor nor agent ever ran
    finally:
        subprocess.run(["ip", "link", "del", host_if], check=False, capture_output=True)


@pytest.mark.anyio
async def test_a_launch_whose_sandbox_arguments_fail_after_the_spawn_kills_the_launcher(
    state_root: Path, agent_files: AgentFiles
) -> None:
    """bwrap's arguments are written after the launcher is spawned: one that cannot be written (a NUL in the
    environment) ends the launcher at its gate and undoes the sandbox."""
    backend = make_backend("namespace", state_root)
    spec = agent_files.spec(environment={"BROKEN": "a\0b"})
    with pytest.raises(ValueError, match="NUL"):
        await backend.start(spec)
    await backend.settle()
    _nothing_left(backend, state_root, spec.sandbox_id)


@pytest.mark.anyio
async def test_the_cpu_quota_is_lifted_until_the_supervisor_is_ready_and_holds_from_then_on(
    state_root: Path, agent_files: AgentFiles
) -> None:
    """The supervisor's imports and the agent's start do not share one quota; the sandbox that start() returns
    (and any exec in it) is under its limit."""
    backend = make_backend("namespace", state_root)
    spec = agent_files.spec(limits=Limits(memory_bytes=256 << 20, cpus=0.25, pids=64, disk_bytes=32 << 20))
    cgroup = backend.cgroup(spec.sandbox_id)  # type: ignore[attr-defined]
    starting = asyncio.ensure_future(backend.start(spec))
    seen: set[float | None] = set()
    while not starting.done():  # the start takes at least the supervisor's Python start: many looks
        with contextlib.suppress(OSError, ValueError):
            if cgroup.pids():  # the launcher joined: the cgroup's limits were written before (a fresh one has none)
                seen.add(cgroup.cpu_quota())
        await asyncio.sleep(0.001)
    sandbox = await starting
    try:
        assert None in seen, seen
        assert cgroup.cpu_quota() == 0.25
    finally:
        await sandbox.stop()
