"""The attacker suite's moves against the gvisor backend, beyond those of test_gvisor_backend.py: with egress (runsc on
the sandbox's own netns, NAT and firewall), privileged syscalls, daemons that outlive a command, a stdout flood, a CPU
hog and symlinks out of the tree. Each move is contained and the evidence asserted; a neighbour stays unharmed.
"""

from __future__ import annotations

import asyncio
import contextlib
import http.server
import shutil
import socket
import threading
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from pathlib import Path

import pytest

from hangar.sandbox.base import Limits, SandboxSpec
from hangar.sandbox.gvisor import GVisorBackend, GVisorSandbox
from hangar.sandbox.gvisor.host import unsupported_reason
from hangar.sandbox.state import instance_tag
from tests.sandbox.fixtures import AgentFiles, eventually, prepared_agent_files, run_exec, wait_ping, world_readable_dir

REASON = unsupported_reason("runsc", "ptrace")
pytestmark = [pytest.mark.anyio, pytest.mark.skipif(REASON is not None, reason=f"gVisor cannot run here: {REASON}")]
SMALL = Limits(memory_bytes=256 << 20, cpus=0.5, pids=48, disk_bytes=8 << 20)


@pytest.fixture(scope="module")
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture(scope="module")
def files() -> Iterator[AgentFiles]:
    yield from prepared_agent_files()


def _backend(egress: str) -> Iterator[GVisorBackend]:
    root = world_readable_dir("hangar-gvisor-attack-")
    tag = instance_tag(root) + "g"
    yield GVisorBackend(state_root=root, tag=tag, egress=egress)  # type: ignore[arg-type]
    asyncio.run(GVisorBackend(state_root=root, tag=tag).cleanup_orphans())
    shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(scope="module")
def backend() -> Iterator[GVisorBackend]:
    yield from _backend("deny")


@pytest.fixture(scope="module")
def public_backend() -> Iterator[GVisorBackend]:
    yield from _backend("allow")


@asynccontextmanager
async def started(backend: GVisorBackend, spec: SandboxSpec) -> AsyncIterator[GVisorSandbox]:
    sandbox = await backend.start(spec)
    try:
        yield sandbox
    finally:
        await sandbox.stop()


async def sh(sandbox: GVisorSandbox, command: str, timeout: float = 30.0) -> tuple[str, str, int | None, bool]:
    out, err, code, timed_out = await run_exec(sandbox, command, timeout)
    return out.decode(errors="replace"), err.decode(errors="replace"), code, timed_out


def py(files: AgentFiles, source: str) -> str:
    quoted = source.replace("'", "'\"'\"'")
    return f"{files.env_dir}/bin/python -c '{quoted}'"


class _Counting(http.server.BaseHTTPRequestHandler):
    hits: list[str] = []

    def do_GET(self) -> None:
        self.hits.append(self.path)
        self.send_response(200)
        self.end_headers()

    def log_message(self, *args: object) -> None:
        return


@pytest.fixture
def host_servers() -> Iterator[dict[str, int]]:
    servers = [http.server.ThreadingHTTPServer((host, 0), _Counting) for host in ("127.0.0.1", "0.0.0.0")]
    for server in servers:
        threading.Thread(target=server.serve_forever, daemon=True).start()
    _Counting.hits = []
    yield {"loopback": servers[0].server_address[1], "any": servers[1].server_address[1]}
    for server in servers:
        server.shutdown()
        server.server_close()


def _host_address() -> str:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        probe.connect(("192.0.2.1", 9))  # no packet is sent: UDP connect only picks the source address
        return str(probe.getsockname()[0])


REACH = """
import socket
for host, port in TARGETS:
    s = socket.socket()
    s.settimeout(3)
    try:
        s.connect((host, port))
        print(host, port, "CONNECTED")
    except OSError as exc:
        print(host, port, type(exc).__name__, exc.errno)
    s.close()
"""


async def test_public_sandbox_cannot_reach_the_host_the_gateway_or_a_neighbour(
    public_backend: GVisorBackend, files: AgentFiles, host_servers: dict[str, int]
) -> None:
    """With egress, runsc uses the sandbox's netns as its network: Hangar's firewall still keeps it off the host."""
    async with (
        started(public_backend, files.spec(network="public", limits=SMALL)) as attacker,
        started(public_backend, files.spec(network="public", port=8000)) as neighbour,
    ):
        assert attacker.link is not None and neighbour.link is not None
        await wait_ping(neighbour)
        targets = [
            ("127.0.0.1", host_servers["loopback"]),  # the sandbox's own loopback: refused
            ("127.0.0.1", host_servers["any"]),
            (_host_address(), host_servers["any"]),  # the host, through the firewall
            (attacker.link.host_ip, host_servers["any"]),  # its own gateway address: the host too
            (neighbour.link.sandbox_ip, 8000),  # another sandbox
        ]
        out, _, code, _ = await sh(attacker, py(files, REACH.replace("TARGETS", repr(targets))))
        assert code == 0 and "CONNECTED" not in out, out
        lines = out.splitlines()
        assert all("ConnectionRefusedError 111" in line for line in lines[:2]), lines
        assert all(line.split()[-1] in ("111", "113", "None") for line in lines[2:]), lines
        assert _Counting.hits == []
        assert (await wait_ping(neighbour)).status_code == 200


async def test_privileged_syscalls_fail_inside_gvisor(backend: GVisorBackend, files: AgentFiles) -> None:
    probe = """
import ctypes
libc = ctypes.CDLL(None, use_errno=True)
calls = {
    "mount": lambda: libc.mount(b"none", b"/tmp", b"tmpfs", 0, None),
    "unshare_net": lambda: libc.unshare(0x40000000),
    "init_module": lambda: libc.syscall(175, 0, 0, 0),
    "bpf": lambda: libc.syscall(321, 0, 0, 0),
    "kexec_load": lambda: libc.syscall(246, 0, 0, 0, 0),
    "reboot": lambda: libc.syscall(169, 0xfee1dead, 672274793, 0x1234567, 0),
    "ptrace_attach_1": lambda: libc.syscall(101, 16, 1, 0, 0),
    "setuid_0": lambda: libc.setuid(0),
}
for name, call in calls.items():
    ctypes.set_errno(0)
    print(name, call(), ctypes.get_errno())
"""
    async with started(backend, files.spec(limits=SMALL)) as attacker:
        out, _, code, _ = await sh(attacker, py(files, probe))
        assert code == 0, out
        results = {line.split()[0]: line.split()[1:] for line in out.splitlines()}
        assert set(results) == {"mount", "unshare_net", "init_module", "bpf", "kexec_load", "reboot"} | {
            "ptrace_attach_1",
            "setuid_0",
        }
        for name, (rc, errno) in results.items():
            assert rc == "-1" and errno in ("1", "38"), (name, rc, errno)  # EPERM, or ENOSYS: gVisor has no such call
        out, _, _, _ = await sh(attacker, "grep -E '^(CapEff|CapBnd):' /proc/self/status")
        assert out.split() == ["CapEff:", "0000000000000000", "CapBnd:", "0000000000000000"]


async def test_daemons_die_with_stop_and_nothing_of_the_sandbox_stays(
    backend: GVisorBackend, files: AgentFiles
) -> None:
    async with started(backend, files.spec(limits=SMALL)) as attacker:
        # The command waits until the daemon runs `sleep` (setsid -f calls setsid() before exec): exec kills the
        # command's process group when it ends, and a child still on its way to setsid() would go with it.
        started_daemon = (
            "setsid -f sleep 3000 </dev/null >/dev/null 2>&1; "
            "for i in $(seq 100); do grep -qx sleep /proc/[0-9]*/comm && break; sleep 0.1; done; echo spawned"
        )
        out, _, code, _ = await sh(attacker, started_daemon)
        assert (out, code) == ("spawned\n", 0)
        count = "for i in 1 2 3 4 5 6 7 8 9 10; do grep -lx sleep /proc/[0-9]*/comm && break; sleep 0.2; done | wc -l"
        out, _, _, _ = await sh(attacker, count)
        assert out.strip() == "1"  # the daemon outlived its command
        host_pids = attacker.cgroup.pids()
    assert attacker.cgroup.pids() == []
    assert [pid for pid in host_pids if _running(pid)] == []  # killed; at most a zombie awaiting its reaper
    assert not attacker.state.path.exists()


def _running(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] not in ("Z", "X")
    except (OSError, IndexError):
        return False


FLOOD = """
import sys
try:
    while True:
        sys.stdout.write("x" * 65536)
except OSError:
    sys.exit(1)
"""


async def test_flooding_stdout_fills_only_its_own_budget(backend: GVisorBackend, files: AgentFiles) -> None:
    code_dir = world_readable_dir("hangar-gvisor-flood-")
    (code_dir / "main.py").write_text(FLOOD)
    (code_dir / "main.py").chmod(0o644)
    flood = AgentFiles(env_dir=files.env_dir, code_dir=code_dir)
    try:
        async with started(backend, files.spec(port=8000)) as neighbour, started(backend, flood.spec()) as flooder:
            assert await eventually(lambda: not flooder.alive(), timeout=60)
            log_size = flooder.log_path.stat().st_size
            assert 0 < log_size <= flood.spec().limits.disk_bytes
            assert (await wait_ping(neighbour)).status_code == 200
    finally:
        shutil.rmtree(code_dir, ignore_errors=True)


async def test_cpu_hog_is_throttled_by_the_quota(backend: GVisorBackend, files: AgentFiles) -> None:
    limits = Limits(memory_bytes=256 << 20, cpus=0.2, pids=48, disk_bytes=8 << 20)
    async with started(backend, files.spec(limits=limits)) as attacker:
        before = attacker.cgroup.cpu_throttled()
        _, _, _, timed_out = await sh(attacker, py(files, "while True: pass"), timeout=2.0)
        assert timed_out
        assert attacker.cgroup.cpu_throttled() > before


async def test_symlinks_do_not_reach_outside_the_tree(backend: GVisorBackend, files: AgentFiles) -> None:
    canary = world_readable_dir("hangar-canary-")
    (canary / "keep").write_text("intact")
    marker = uuid.uuid4().hex
    try:
        async with started(backend, files.spec(limits=SMALL)) as attacker:
            plant = f'ln -s {canary} "$HOME/dir"; ln -s {canary}/keep "$HOME/file"; echo {marker} > "$HOME/file"'
            _, _, code, _ = await sh(attacker, plant)
            assert code != 0  # the link points at nothing inside the sandbox
            await sh(attacker, f'ln -s / "$HOME/root"; echo {marker} > "$HOME/root/etc/passwd"')
        assert (canary / "keep").read_text() == "intact"  # neither through the sandbox nor through stop's cleanup
        with contextlib.suppress(OSError):
            assert marker not in Path("/etc/passwd").read_text()
        assert not attacker.state.path.exists()
    finally:
        shutil.rmtree(canary, ignore_errors=True)
