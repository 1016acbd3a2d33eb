"""The attacker suite's moves, made from a session of a container image (namespace backend, cold: image sessions do
not fork yet). The image holds Debian's python3 (stdlib only) and busybox; its agent is the busybox shell server.
Every move is contained, the evidence asserted, and a neighbour image session beside it keeps serving and keeps
its files. The image also plants an absolute symlink to the host's /etc/shadow, as images legitimately may."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import shlex
import shutil
import socket
import tempfile
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from pathlib import Path

import pytest

from hangar.sandbox.base import Limits, SandboxSpec
from hangar.sandbox.selection import namespace_unsupported_reason
from hangar.sandbox.state import instance_tag
from tests.sandbox.fixtures import eventually, processes_with_env, run_exec, wait_ping, world_readable_dir
from tests.support.agents.image_rootfs import BUSYBOX_ARGV, python_rootfs

pytestmark = [
    pytest.mark.anyio,
    pytest.mark.skipif(namespace_unsupported_reason() is not None, reason=str(namespace_unsupported_reason())),
]
SMALL = Limits(memory_bytes=160 << 20, cpus=0.5, pids=48, disk_bytes=8 << 20)
SECRET = "neighbour-s3cret"
PY = "/usr/bin/python3"

if namespace_unsupported_reason() is None:
    from hangar.sandbox.namespace.backend import NamespaceBackend, NamespaceSandbox
    from hangar.sandbox.namespace.seccomp import machine_arch, resolve


@pytest.fixture(scope="module")
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture(scope="module")
def rootfs() -> Iterator[Path]:
    base = world_readable_dir("hangar-attack-image-")
    yield python_rootfs(base / "rootfs")
    shutil.rmtree(base, ignore_errors=True)


@pytest.fixture
def backend() -> Iterator[NamespaceBackend]:
    root = Path(tempfile.mkdtemp(prefix="hia-", dir="/tmp"))
    root.chmod(0o755)
    backend = NamespaceBackend(state_root=root, tag=instance_tag(root))
    yield backend
    asyncio.run(NamespaceBackend(state_root=root, tag=instance_tag(root)).cleanup_orphans())
    shutil.rmtree(root, ignore_errors=True)


def spec(rootfs: Path, **changes: object) -> SandboxSpec:
    base = SandboxSpec(
        sandbox_id=f"a-{uuid.uuid4().hex[:12]}",
        code_dir=rootfs,
        env_dir=rootfs,
        command=BUSYBOX_ARGV,
        agent_port=8080,
        limits=SMALL,
        environment={},
        network="none",
        rootfs=rootfs,
        user="app",
        workdir="/app",
    )
    return dataclasses.replace(base, **changes)  # type: ignore[arg-type]


@asynccontextmanager
async def started(backend: NamespaceBackend, sandbox_spec: SandboxSpec) -> AsyncIterator[NamespaceSandbox]:
    sandbox = await backend.start(sandbox_spec)
    try:
        yield sandbox
    finally:
        await sandbox.stop()


@asynccontextmanager
async def pair(
    backend: NamespaceBackend, rootfs: Path, limits: Limits = SMALL
) -> AsyncIterator[tuple[NamespaceSandbox, NamespaceSandbox]]:
    """An attacker and a neighbour image session (the neighbour keeps a secret in /tmp and its HOME)."""
    async with (
        started(backend, spec(rootfs, limits=limits)) as attacker,
        started(backend, spec(rootfs, user="")) as neighbour,
    ):
        out, _, code, _ = await run_exec(neighbour, f'echo {SECRET} | tee "$HOME/secret" /tmp/secret')
        assert (out.decode().strip(), code) == (SECRET, 0)
        await wait_ping(attacker)
        yield attacker, neighbour
        assert (await wait_ping(neighbour, timeout=10)).status_code == 200
        out, _, code, _ = await run_exec(neighbour, 'cat "$HOME/secret" /tmp/secret')
        assert out.decode().split() == [SECRET, SECRET]


async def sh(sandbox: NamespaceSandbox, command: str, timeout: float = 20.0) -> tuple[str, str, int | None, bool]:
    out, err, code, timed_out = await run_exec(sandbox, command, timeout)
    return out.decode(errors="replace"), err.decode(errors="replace"), code, timed_out


def py(source: str) -> str:
    return f"{PY} -c {shlex.quote(source)}"


async def test_cannot_read_a_neighbours_or_the_hosts_files(backend: NamespaceBackend, rootfs: Path) -> None:
    async with pair(backend, rootfs) as (attacker, neighbour):
        merged = neighbour.state.path / "root"
        targets = [
            merged / "tmp" / "secret",
            neighbour.state.rw,
            backend.state_root,
            Path("/etc/shadow"),
            Path("/var"),
        ]
        targets += [Path("/proc/1/root/etc/shadow"), Path("/etc/escape"), Path("/work"), Path("/.hangar/../etc/shadow")]
        for target in targets:
            out, err, code, _ = await sh(attacker, f"cat {target} || ls {target}")
            assert code != 0 and SECRET not in out and "root:" not in out, (target, out)
            assert "No such file or directory" in err or "Permission denied" in err, (target, err)
        out, _, _, _ = await sh(attacker, "ls -A /")
        assert set(out.split()) <= {".hangar", "app", "bin", "data", "dev", "etc", "home", "lib", "lib64", "proc"} | {
            "root",
            "srv",
            "tmp",
            "usr",
        }
        out, _, _, _ = await sh(attacker, "ls -A /.hangar; ls /.hangar/usr | head -3")
        assert out.split()[:4] == ["commands.py", "sock_diag.py", "supervisor.py", "usr"]
        assert attacker.uid != neighbour.uid
        upper = neighbour.state.rw / "upper"
        assert (upper.stat().st_uid, neighbour.state.rw.stat().st_mode & 0o777) == (neighbour.uid, 0o700)


async def test_secrets_never_show_in_host_command_lines(backend: NamespaceBackend, rootfs: Path) -> None:
    secret = f"sk-{uuid.uuid4().hex}"
    async with started(backend, spec(rootfs, environment={"API_KEY": secret})) as sandbox:
        await wait_ping(sandbox)
        out, _, _, _ = await sh(sandbox, 'printf %s "$API_KEY"')
        assert out == secret
        leaking = []
        for entry in Path("/proc").iterdir():
            with contextlib.suppress(OSError):
                if entry.name.isdigit() and secret.encode() in (entry / "cmdline").read_bytes():
                    leaking.append(entry.name)
        assert leaking == []


async def test_cannot_see_signal_or_trace_a_neighbours_processes(backend: NamespaceBackend, rootfs: Path) -> None:
    async with pair(backend, rootfs) as (attacker, neighbour):
        host_pids = neighbour.cgroup.pids()
        out, _, _, _ = await sh(attacker, "ls /proc | grep -E '^[0-9]+$'")
        visible = {int(p) for p in out.split()}
        assert len(visible) < 12 and not visible & set(host_pids) - {1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11}
        out, err, _, _ = await sh(attacker, " ; ".join(f"kill -9 {p}" for p in host_pids if p > 100))
        assert "No such process" in err
        nrs = {name: resolve(machine_arch(), name) for name in ("ptrace", "process_vm_readv")}
        probe = f"""
import ctypes
libc = ctypes.CDLL(None, use_errno=True)
print("ptrace", libc.syscall({nrs["ptrace"]}, 16, 1, 0, 0), ctypes.get_errno())
print("process_vm_readv", libc.syscall({nrs["process_vm_readv"]}, 1, 0, 0, 0, 0, 0), ctypes.get_errno())
"""
        out, err, code, _ = await sh(attacker, py(probe))
        assert code == 0, err
        assert out.split() == ["ptrace", "-1", "1", "process_vm_readv", "-1", "1"]  # EPERM from seccomp
        with contextlib.suppress(Exception):
            await sh(attacker, "kill -KILL -1", timeout=5)


async def test_cannot_reach_the_host_or_its_services(backend: NamespaceBackend, rootfs: Path) -> None:
    listener = socket.socket()
    listener.bind(("0.0.0.0", 0))
    listener.listen()
    abstract = f"\0hangar-image-attack-{uuid.uuid4().hex}"
    unix = socket.socket(socket.AF_UNIX)
    unix.bind(abstract)
    unix.listen()
    port = listener.getsockname()[1]
    probe = f"""
import socket
for host in ("127.0.0.1", "10.0.0.1", "169.254.169.254"):
    s = socket.socket(); s.settimeout(2)
    try:
        s.connect((host, {port})); print(host, "CONNECTED")
    except OSError as exc:
        print(host, type(exc).__name__)
u = socket.socket(socket.AF_UNIX)
try:
    u.connect({abstract!r}); print("abstract CONNECTED")
except OSError as exc:
    print("abstract", type(exc).__name__)
"""
    try:
        async with started(backend, spec(rootfs)) as attacker:
            await wait_ping(attacker)
            out, err, code, _ = await sh(attacker, py(probe))
            assert code == 0, err
            assert "CONNECTED" not in out and len(out.splitlines()) == 4
    finally:
        listener.close()
        unix.close()


async def test_cannot_mount_unshare_or_load_modules(backend: NamespaceBackend, rootfs: Path) -> None:
    async with started(backend, spec(rootfs, user="")) as attacker:  # even as the image's root
        await wait_ping(attacker)
        probe = f"""
import ctypes
libc = ctypes.CDLL(None, use_errno=True)
print("mount", libc.mount(b"x", b"/tmp", b"tmpfs", 0, None), ctypes.get_errno())
print("unshare", libc.unshare(0x10000000), ctypes.get_errno())
print("init_module", libc.syscall({resolve(machine_arch(), "init_module")}, 0, 0, b""), ctypes.get_errno())
print("chroot", libc.chroot(b"/tmp"), ctypes.get_errno())
"""
        out, err, code, _ = await sh(attacker, py(probe))
        assert code == 0, err
        for line in out.splitlines():
            _, rc, errno = line.split()
            assert rc == "-1" and int(errno) in (1, 22, 38), line  # EPERM (or EINVAL/ENOSYS): never done
        out, _, _, _ = await sh(attacker, "id -u; cat /proc/self/status | grep CapEff")
        assert out.split() == ["0", "CapEff:", "0000000000000000"]


async def test_fork_bomb_stops_at_the_pids_limit(backend: NamespaceBackend, rootfs: Path) -> None:
    async with pair(backend, rootfs) as (attacker, _neighbour):
        bomb = "b() { b | b & }; b; sleep 2; echo done"
        with contextlib.suppress(Exception):
            await sh(attacker, bomb, timeout=6)
        assert attacker.cgroup.pid_count() <= SMALL.pids
        await attacker.stop()


async def test_memory_bomb_is_killed_inside_its_cgroup(backend: NamespaceBackend, rootfs: Path) -> None:
    async with pair(backend, rootfs) as (attacker, _neighbour):
        _, _, code, _ = await sh(attacker, py("b = bytearray(400 << 20); print(len(b))"))
        assert code not in (0, None)  # OOM-killed in its own cgroup
        assert (await wait_ping(attacker)).status_code == 200


async def test_filling_the_disk_stops_at_the_size_limit(backend: NamespaceBackend, rootfs: Path) -> None:
    async with pair(backend, rootfs) as (attacker, _neighbour):
        _, err, code, _ = await sh(attacker, "dd if=/dev/zero of=/tmp/fill bs=1M count=64")
        assert code != 0 and ("No space left" in err or "I/O error" in err)
        out, _, _, _ = await sh(attacker, "dd if=/dev/zero of=/dev/shm/fill bs=1M count=64; wc -c < /dev/shm/fill")
        assert int(out.split()[-1]) <= SMALL.disk_bytes
        for target in ("/.hangar/usr/fill", "/.hangar/supervisor.py", "/etc/hosts", "/etc/resolv.conf"):
            _, err, code, _ = await sh(attacker, f"echo x > {target}")
            assert code != 0 and "Read-only file system" in err, (target, err)
        # The image's own files are the session's to change, in its own overlay only; the store is untouched.
        _, err, code, _ = await sh(attacker, "rm -f /tmp/fill; echo changed > /etc/passwd && cat /etc/passwd")
        assert code == 0, err
    assert "changed" not in (rootfs / "etc" / "passwd").read_text()


async def test_planted_symlinks_and_stop_do_not_reach_the_host(backend: NamespaceBackend, rootfs: Path) -> None:
    canary = world_readable_dir("hangar-image-canary-")
    (canary / "keep").write_text("intact")
    try:
        async with started(backend, spec(rootfs, user="")) as attacker:
            await wait_ping(attacker)
            plant = f"ln -s {canary} /tmp/dir; ln -s {canary}/keep /top; echo pwned > /tmp/dir/keep; echo pwned > /top"
            _, _, code, _ = await sh(attacker, plant)
            assert code != 0
            state = attacker.state.path
        assert (canary / "keep").read_text() == "intact"
        assert not state.exists() and str(state) not in Path("/proc/self/mounts").read_text()
    finally:
        shutil.rmtree(canary, ignore_errors=True)


async def test_a_double_forked_daemon_dies_with_stop(backend: NamespaceBackend, rootfs: Path) -> None:
    marker = f"HANGAR_IMAGE_DAEMON={uuid.uuid4().hex}"
    async with started(backend, spec(rootfs)) as attacker:
        await wait_ping(attacker)
        # The command's process group is killed when it ends: wait inside until the daemon has left it.
        wait = f"for i in $(seq 100); do grep -qs {marker} /proc/[0-9]*/environ && break; sleep 0.1; done"
        await sh(attacker, f"(env {marker} setsid sleep 3000 > /dev/null 2>&1 &) ; {wait}; sleep 0.2")
        assert await eventually(lambda: processes_with_env(marker) != [])
    assert await eventually(lambda: processes_with_env(marker) == [])
