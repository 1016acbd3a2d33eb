"""The gvisor backend with the real runsc: a session serves and runs commands, and an agent turned attacker is contained
(files, processes, network, sockets, fork and memory bombs), with a neighbour gVisor sandbox unharmed beside it.

The attacks run through ``exec``, as the sandbox's own user inside gVisor. Skipped (a failure under
HANGAR_REQUIRE_ISOLATION=1) where runsc cannot run a trial sandbox; the detection itself is tested everywhere.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import shutil
import socket
import struct
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from pathlib import Path

import httpx
import pytest

from hangar.config import Settings
from hangar.domain.errors import RuntimeClientError, ValidationError
from hangar.sandbox.base import Limits, Outbound, SandboxSpec
from hangar.sandbox.gvisor import GVisorBackend, GVisorSandbox
from hangar.sandbox.gvisor.backend import host_limits
from hangar.sandbox.gvisor.host import unsupported_reason
from hangar.sandbox.selection import SandboxUnavailableError, preflight, select_backend
from hangar.sandbox.state import instance_tag
from hangar.sandbox.supervised import tail
from tests.sandbox.fixtures import AgentFiles, client, prepared_agent_files, run_exec, wait_ping, world_readable_dir

REASON = unsupported_reason("runsc", "ptrace")
needs_runsc = pytest.mark.skipif(REASON is not None, reason=f"gVisor cannot run here: {REASON}")
SECRET = "neighbour-s3cret"


@pytest.fixture(scope="module")
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture(scope="module")
def files() -> Iterator[AgentFiles]:
    yield from prepared_agent_files()


@pytest.fixture(scope="module")
def backend() -> Iterator[GVisorBackend]:
    root = world_readable_dir("hangar-gvisor-")
    backend = GVisorBackend(state_root=root, tag=instance_tag(root) + "g")
    yield backend
    asyncio.run(GVisorBackend(state_root=root, tag=backend.tag).cleanup_orphans())
    shutil.rmtree(root, ignore_errors=True)


@asynccontextmanager
async def started(backend: GVisorBackend, spec: SandboxSpec) -> AsyncIterator[GVisorSandbox]:
    sandbox = await backend.start(spec)
    try:
        yield sandbox
    finally:
        await sandbox.stop()


async def sh(sandbox: GVisorSandbox, command: str, timeout: float = 30.0) -> tuple[str, str, int | None]:
    out, err, code, _ = await run_exec(sandbox, command, timeout)
    return out.decode(errors="replace"), err.decode(errors="replace"), code


def py(files: AgentFiles, source: str) -> str:
    quoted = source.replace("'", "'\"'\"'")
    return f"{files.env_dir}/bin/python -c '{quoted}'"


def test_an_unusable_runsc_is_refused_with_its_reason(tmp_path: Path) -> None:
    """Fail closed: ``--sandbox gvisor`` on a host where runsc cannot run refuses to serve and says why."""
    missing = unsupported_reason(str(tmp_path / "no-runsc"), "ptrace")
    assert missing is not None and "is not installed" in missing and "apt-get install -y runsc" in missing
    broken = unsupported_reason("/bin/false", "ptrace")
    assert broken == "runsc could not run a trial sandbox on platform ptrace (exit 1): no output"
    settings = Settings(data_dir=tmp_path, sandbox_backend="gvisor", gvisor_runsc=str(tmp_path / "no-runsc"))
    with pytest.raises(SandboxUnavailableError, match="sandbox_backend=gvisor: this host cannot isolate sessions"):
        preflight(settings)


@needs_runsc
@pytest.mark.anyio
async def test_a_session_serves_streams_and_runs_commands_inside_gvisor(
    backend: GVisorBackend, files: AgentFiles
) -> None:
    async with started(backend, files.spec(environment={"GREETING": "hi"})) as sandbox:
        assert (await wait_ping(sandbox)).status_code == 200
        async with client(sandbox) as http:
            answer = await http.post("/invocations", json={"prompt": "x"})
            assert answer.status_code == 200
        out, _, code = await sh(sandbox, 'id -u; echo "$GREETING" "$HOME"; uname -r; dmesg | head -1')
        lines = out.splitlines()
        assert code == 0 and lines[0] == str(sandbox.uid) and lines[1] == "hi /home/agent"
        assert lines[2] == "4.4.0" and "gVisor" in lines[3]  # the agent talks to gVisor's kernel, not the host's
        _, err, code = await sh(sandbox, "echo x > /usr/x; echo x > /x")
        assert code != 0 and err.count("Read-only file system") + err.count("Permission denied") == 2
        out, _, code = await sh(sandbox, 'echo kept > "$HOME/f" && cat "$HOME/f"')
        assert (out, code) == ("kept\n", 0)
        assert (sandbox.state.home / "f").stat().st_uid == sandbox.uid
        host_pids = sandbox.cgroup.pids()
        assert host_pids and sandbox.cgroup.pid_count() <= host_limits(files.spec().limits).pids
    assert not sandbox.state.path.exists() and sandbox.cgroup.pids() == []


@needs_runsc
@pytest.mark.anyio
async def test_an_attacker_is_contained_and_its_neighbour_unharmed(backend: GVisorBackend, files: AgentFiles) -> None:
    limits = Limits(memory_bytes=512 << 20, cpus=1.0, pids=32, disk_bytes=8 << 20)
    async with (
        started(backend, files.spec(limits=limits)) as attacker,
        started(backend, files.spec(port=8000)) as neighbour,
    ):
        out, _, code = await sh(neighbour, f'echo {SECRET} | tee "$HOME/secret" /tmp/secret')
        assert (out.strip(), code) == (SECRET, 0)
        await wait_ping(attacker)
        # Files: nothing of the host or the neighbour is visible.
        for target in (neighbour.state.home / "secret", backend.state_root, Path("/etc/shadow"), Path("/root")):
            out, _, code = await sh(attacker, f"cat {target}")
            assert code != 0 and SECRET not in out, target
        # Processes: its own few only; the neighbour's host pids do not exist for it.
        out, _, _ = await sh(attacker, "ls /proc | grep -E '^[0-9]+$'")
        assert len(out.split()) < 10
        _, err, _ = await sh(attacker, " ; ".join(f"kill -9 {pid}" for pid in neighbour.cgroup.pids()[:5]))
        assert "No such process" in err or err == ""
        # Network: without egress, nothing but its own loopback.
        probe = "import socket\ns = socket.socket()\ns.settimeout(3)\ntry:\n    s.connect(('10.255.255.53', 53))\n"
        probe += "    print('CONNECTED')\nexcept OSError as exc:\n    print(exc.errno)\n"
        out, _, _ = await sh(attacker, py(files, probe))
        assert out.strip() in ("101", "113")  # ENETUNREACH, or EHOSTUNREACH from gVisor's netstack
        # Fork bomb: gVisor refuses the task beyond the session's limit; the sandbox and the host are fine.
        bomb = "import os, time\nn = 0\ntry:\n    while n < 1000:\n        if os.fork() == 0:\n"
        bomb += "            os.closerange(0, 3)\n            time.sleep(30)\n            os._exit(0)\n        n += 1\n"
        bomb += "except OSError as exc:\n    print(n, exc.errno, flush=True)\n"
        out, _, code = await sh(attacker, py(files, bomb))
        forked, errno = out.split()
        assert int(forked) < limits.pids and errno == "11"  # EAGAIN
        assert attacker.alive() and (await wait_ping(attacker)).status_code == 200
        assert attacker.cgroup.pid_count() <= host_limits(limits).pids
        # Disk: the size cap of home and /tmp holds inside gVisor too.
        _, err, code = await sh(attacker, 'dd if=/dev/zero of="$HOME/fill" bs=1M count=64')
        assert code != 0 and "No space left on device" in err
        # Its own sockets: swapping one for a link to a host socket never sends the gateway there.
        canary_path = world_readable_dir("hangar-canary-") / "canary.sock"
        with socket.socket(socket.AF_UNIX) as canary:
            canary.bind(str(canary_path))
            canary.listen()
            canary.setblocking(False)
            await sh(attacker, f"cd /run/hangar-sandbox/sock && rm -f agent.sock && ln -s {canary_path} agent.sock")
            assert attacker.socket_path == attacker.state.run / "agent.sock"
            with contextlib.suppress(httpx.HTTPError):
                async with client(attacker) as http:
                    await http.get("/ping", timeout=2)
            with pytest.raises(BlockingIOError):
                canary.accept()
        shutil.rmtree(canary_path.parent, ignore_errors=True)
        # The neighbour kept its files and serves.
        assert (await wait_ping(neighbour)).status_code == 200
        assert (neighbour.state.home / "secret").read_text().strip() == SECRET


@needs_runsc
@pytest.mark.anyio
async def test_a_memory_bomb_ends_at_its_cgroup_and_spares_the_neighbour(
    backend: GVisorBackend, files: AgentFiles
) -> None:
    limits = Limits(memory_bytes=128 << 20, cpus=1.0, pids=32, disk_bytes=8 << 20)
    bomb = "hog = []\nfor step in range(128):\n    hog.append(bytearray(8 << 20))\n    print(step, flush=True)\n"
    bomb += "print('survived')\n"
    async with (
        started(backend, files.spec(limits=limits)) as attacker,
        started(backend, files.spec(port=8000)) as neighbour,
    ):
        await wait_ping(attacker)
        out = ""
        with contextlib.suppress(Exception):  # the Sentry is one host process: the OOM killer may end the sandbox
            out, _, _ = await sh(attacker, py(files, bomb), timeout=60)
        assert "survived" not in out
        assert attacker.cgroup.oom_kills() > 0
        assert (await wait_ping(neighbour)).status_code == 200


@needs_runsc
@pytest.mark.anyio
async def test_secrets_never_show_in_host_command_lines(backend: GVisorBackend, files: AgentFiles) -> None:
    secret = f"sk-{uuid.uuid4().hex}"
    async with started(backend, files.spec(environment={"API_KEY": secret})) as sandbox:
        out, _, _ = await sh(sandbox, 'printf %s "$API_KEY"')
        assert out == secret
        leaking = []
        for entry in Path("/proc").iterdir():
            with contextlib.suppress(OSError):
                if entry.name.isdigit() and secret.encode() in (entry / "cmdline").read_bytes():
                    leaking.append(entry.name)
        assert leaking == []
        config = sandbox.state.path / "bundle" / "config.json"
        assert config.stat().st_mode & 0o077 == 0  # the environment is in the bundle, root's alone


@needs_runsc
@pytest.mark.anyio
async def test_outbound_sockets_work_and_name_the_sandbox_that_connects(
    backend: GVisorBackend, files: AgentFiles
) -> None:
    """The identity channel's path: the agent connects to 127.0.0.1:PORT, its supervisor to the host's Unix socket
    (through gVisor's Gofer); the host tells which sandbox is calling from the peer's credentials."""
    socket_dir = backend.outbound_dir()
    path = socket_dir / f"probe-{uuid.uuid4().hex[:8]}.sock"
    seen: list[str | None] = []

    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        sock = writer.get_extra_info("socket")
        pid, uid, _ = struct.unpack("3i", sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, 12))
        seen.append(backend.sandbox_of_peer(pid, uid))
        writer.write(f"{seen[-1]}\n".encode())
        await writer.drain()
        writer.close()

    server = await asyncio.start_unix_server(answer, path=str(path))
    path.chmod(0o666)  # as the identity channel's: every sandbox user may connect
    try:
        outbound = Outbound(socket_dir=socket_dir, ports=((9911, path.name),))
        async with started(backend, dataclasses.replace(files.spec(), outbound=outbound)) as sandbox:
            probe = (
                "import socket\ns = socket.create_connection(('127.0.0.1', 9911), 5)\nprint(s.makefile().readline())"
            )
            out, err, code = await sh(sandbox, py(files, probe))
            assert code == 0 and out.strip() == sandbox.id, (out, err, tail(sandbox.log_path))
            assert seen == [sandbox.id]
    finally:
        server.close()
        path.unlink(missing_ok=True)


@needs_runsc
@pytest.mark.anyio
async def test_a_new_hangar_process_removes_a_crashed_ones_gvisor_sandboxes(files: AgentFiles) -> None:
    """Nothing lives only in memory: a sandbox whose backend object is gone (a crash) is found and removed whole —
    gVisor's processes, the cgroup, the socket mounts, the state dir and the uid lease."""
    root = world_readable_dir("hangar-gvisor-orphans-")
    tag = instance_tag(root) + "g"
    try:
        crashed = GVisorBackend(state_root=root, tag=tag)
        sandbox = await crashed.start(files.spec())
        await wait_ping(sandbox)
        assert sandbox.cgroup.pids() and crashed.leases.holder(sandbox.uid) == sandbox.id
        assert await GVisorBackend(state_root=root, tag=tag).cleanup_orphans() == 1
        assert sandbox.cgroup.pids() == [] and not sandbox.state.path.exists()
        assert crashed.leases.holder(sandbox.uid) is None
        assert str(sandbox.state.path) not in Path("/proc/self/mountinfo").read_text()
        assert not sandbox.alive()
    finally:
        shutil.rmtree(root, ignore_errors=True)


@pytest.mark.anyio
async def test_a_runtime_that_asks_for_gvisor_never_runs_without_isolation(tmp_path: Path, files: AgentFiles) -> None:
    """On a ``--sandbox process`` server (no isolation, said loudly) its sessions are refused, not run bare."""
    backend = select_backend(Settings(data_dir=tmp_path, sandbox_backend="process"))
    spec = files.spec(environment={"HANGAR_SANDBOX_BACKEND": "gvisor"})
    with pytest.raises(RuntimeClientError, match="asks for gVisor"):
        await backend.start(spec)
    with pytest.raises(ValidationError, match="not a sandbox: use gvisor or namespace"):
        await backend.start(files.spec(environment={"HANGAR_SANDBOX_BACKEND": "vm"}))
    assert await backend.cleanup_orphans() == 0  # nothing was started
