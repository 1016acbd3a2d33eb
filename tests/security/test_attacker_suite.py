"""An agent turned attacker, against the namespace backend: every move is contained, the evidence is asserted,
and a neighbour sandbox started beside it keeps working and keeps its files.

The agent is the real one (tests/sandbox/agent_app.py under uvicorn); the attacks run through ``exec``, i.e. as
the sandbox's own uid inside its namespaces, cgroup and seccomp filter, exactly like code the agent would run.

Every attack runs four times (``start_kind``): from a cold sandbox (``backend.start``: bubblewrap isolates it), from
a sandbox forked from a warm template of the same version (``backend.fork``: the session isolates itself, see
``hangar/sandbox/isolate.py``), and ``async-fork``: forked from a template of the same agent started from async code
(``asyncio.run`` → ``uvicorn.Server.serve``, whose template stops where main.py enters its event loop), and
``spare``: a fork of the same template finished ahead (answering ``/ping`` before the test began, as the warm pool's
forked spares are; ``sessions/pool.py``), while the next spare is forked beside the attack. The
neighbour stays cold. Templates are kept for the whole module, one per version
and spec, on a backend of their own, and each must outlive the attacks of the sessions forked from it.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import http.server
import platform
import shlex
import shutil
import signal
import socket
import threading
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from pathlib import Path

import pytest

from hangar.sandbox.base import Limits, SandboxSpec, Template
from hangar.sandbox.selection import namespace_unsupported_reason
from tests.sandbox.async_agent import async_variant
from tests.sandbox.fixtures import (
    AgentFiles,
    client,
    eventually,
    make_backend,
    prepared_agent_files,
    processes_with_env,
    run_exec,
    wait_ping,
    world_readable_dir,
)

pytestmark = [
    pytest.mark.anyio,
    pytest.mark.skipif(namespace_unsupported_reason() is not None, reason=str(namespace_unsupported_reason())),
]
SMALL = Limits(memory_bytes=160 << 20, cpus=0.5, pids=48, disk_bytes=8 << 20)
SECRET = "neighbour-s3cret"

if namespace_unsupported_reason() is None:
    from hangar.sandbox.namespace.backend import NamespaceBackend, NamespaceSandbox
    from hangar.sandbox.namespace.seccomp import machine_arch, resolve


@pytest.fixture(scope="module")
def anyio_backend() -> str:
    return "asyncio"  # one event loop for the module: the warm templates (and their refill tasks) outlive a test


@pytest.fixture(scope="module")
def files() -> Iterator[AgentFiles]:
    yield from prepared_agent_files()


class Starts:
    """How the current test starts its attacker: ``cold`` or ``fork``; the forking backend and its templates."""

    def __init__(self) -> None:
        self.kind = "cold"
        self.backend: NamespaceBackend | None = None
        self.templates: dict[str, Template] = {}
        self.async_code: dict[Path, Path] = {}  # a code dir -> its copy whose main.py serves from asyncio.run
        self.spares: dict[str, asyncio.Task[NamespaceSandbox]] = {}  # template key -> the next spare (forking ahead)

    def code_dir(self, code: Path) -> Path:
        """Where the current test's attacker finds its code (``async-fork`` runs a copy of it)."""
        return self.async_code.get(code, code) if self.kind == "async-fork" else code

    async def fork(self, spec: SandboxSpec, kind: str = "fork") -> tuple[NamespaceSandbox, Template]:
        """A sandbox forked from the warm template of ``spec``'s version and spec (started on first use)."""
        assert self.backend is not None
        if kind == "async-fork":
            if spec.code_dir not in self.async_code:
                code = world_readable_dir("hangar-attack-async-code-")
                shutil.copytree(spec.code_dir, code, dirs_exist_ok=True)
                (code / "main.py").write_text(async_variant((spec.code_dir / "main.py").read_text()))
                (code / "main.py").chmod(0o644)
                self.async_code[spec.code_dir] = code
            spec = dataclasses.replace(spec, code_dir=self.async_code[spec.code_dir])
        key = repr(dataclasses.replace(spec, sandbox_id="-"))
        if key not in self.templates:
            template_id = f"tpl-{uuid.uuid4().hex[:12]}"
            self.templates[key] = await self.backend.start_template(dataclasses.replace(spec, sandbox_id=template_id))
        template = self.templates[key]
        if kind != "spare":
            return await self.backend.fork(template, spec), template
        spare = self.spares.pop(key, None) or self._spare(template, spec)
        sandbox = await spare
        assert sandbox.alive() and sandbox.id != spec.sandbox_id  # finished ahead, under an id of its own
        self.spares[key] = self._spare(template, spec)  # the next one forks beside the attack
        return sandbox, template

    def _spare(self, template: Template, spec: SandboxSpec) -> asyncio.Task[NamespaceSandbox]:
        assert self.backend is not None
        backend = self.backend

        async def ahead() -> NamespaceSandbox:
            sandbox = await backend.fork(template, dataclasses.replace(spec, sandbox_id=f"sp-{uuid.uuid4().hex[:12]}"))
            await wait_ping(sandbox)
            return sandbox

        return asyncio.create_task(ahead())


STARTS = Starts()


@pytest.fixture(scope="module")
async def forking_backend() -> AsyncIterator[NamespaceBackend]:
    """Where the ``fork`` kind's templates and sessions live (egress allowed, for the PUBLIC attack)."""
    root = world_readable_dir("hangar-attack-templates-")
    backend = make_backend("namespace", root, egress="allow")
    assert isinstance(backend, NamespaceBackend)
    STARTS.backend = backend
    try:
        yield backend
    finally:
        for spare in STARTS.spares.values():  # before the templates: a template outlives its forks
            with contextlib.suppress(Exception):
                await (await spare).stop()
        STARTS.spares.clear()
        for template in STARTS.templates.values():
            await template.stop()
        STARTS.templates.clear()
        STARTS.backend = None
        for code in STARTS.async_code.values():
            shutil.rmtree(code, ignore_errors=True)
        STARTS.async_code.clear()
        await make_backend("namespace", root).cleanup_orphans()
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(params=["cold", "fork", "async-fork", "spare"], autouse=True)
def start_kind(request: pytest.FixtureRequest, forking_backend: NamespaceBackend) -> Iterator[str]:
    STARTS.kind = request.param
    yield request.param
    STARTS.kind = "cold"


@asynccontextmanager
async def started(
    backend: NamespaceBackend, spec: SandboxSpec, kind: str | None = None
) -> AsyncIterator[NamespaceSandbox]:
    """A sandbox of the test's start kind (or ``kind``), stopped however the test ends: ``backend.start(spec)``,
    or ``fork`` from the warm template of the same version on the forking backend, which must survive the attack."""
    template: Template | None = None
    if (kind or STARTS.kind) in ("fork", "async-fork", "spare"):
        sandbox, template = await STARTS.fork(spec, kind or STARTS.kind)
    else:
        sandbox = await backend.start(spec)
    try:
        yield sandbox
    finally:
        await sandbox.stop()
    assert template is None or template.alive(), f"the template died: {template.describe()}"


@pytest.fixture
def backend() -> Iterator[NamespaceBackend]:
    root = world_readable_dir("hangar-attack-")
    backend = make_backend("namespace", root)
    assert isinstance(backend, NamespaceBackend)
    yield backend
    asyncio.run(make_backend("namespace", root).cleanup_orphans())
    shutil.rmtree(root, ignore_errors=True)


@asynccontextmanager
async def pair(
    backend: NamespaceBackend, files: AgentFiles, limits: Limits = SMALL, network: str = "none"
) -> AsyncIterator[tuple[NamespaceSandbox, NamespaceSandbox]]:
    """An attacker and a neighbour (whose agent listens on 8000 and who keeps a secret in $HOME and /tmp)."""
    async with (
        started(backend, files.spec(limits=limits, network=network)) as attacker,
        started(backend, files.spec(port=8000, network=network), kind="cold") as neighbour,
    ):
        assert isinstance(attacker, NamespaceSandbox) and isinstance(neighbour, NamespaceSandbox)
        out, _, code, _ = await run_exec(neighbour, f'echo {SECRET} | tee "$HOME/secret" /tmp/secret')
        assert (out.decode().strip(), code) == (SECRET, 0)
        await wait_ping(attacker)
        yield attacker, neighbour
        await assert_neighbour_fine(neighbour)


async def assert_neighbour_fine(neighbour: NamespaceSandbox) -> None:
    assert (await wait_ping(neighbour, timeout=10)).status_code == 200
    assert (neighbour.state.home / "secret").read_text().strip() == SECRET
    assert (neighbour.state.tmp / "secret").read_text().strip() == SECRET


def contained(move: str, evidence: object) -> None:
    """One line per move for the report (``pytest -rP`` or ``-s`` shows them)."""
    print(f"CONTAINED {move}: {evidence}")


async def sh(sandbox: NamespaceSandbox, command: str, timeout: float = 20.0) -> tuple[str, str, int | None, bool]:
    out, err, code, timed_out = await run_exec(sandbox, command, timeout)
    return out.decode(errors="replace"), err.decode(errors="replace"), code, timed_out


def py(files: AgentFiles, source: str) -> str:
    return f"{files.env_dir}/bin/python -c {shlex.quote(source)}"


async def test_cannot_read_a_neighbours_or_the_hosts_files(backend: NamespaceBackend, files: AgentFiles) -> None:
    async with pair(backend, files) as (attacker, neighbour):
        targets = [
            neighbour.state.home / "secret",
            neighbour.state.tmp / "secret",
            backend.state_root,
            Path("/etc/shadow"),
            Path("/root"),
            Path("/proc/1/root/etc/shadow"),
        ]
        for target in targets:
            out, err, code, _ = await sh(attacker, f"cat {target} || ls {target}")
            assert code != 0 and SECRET not in out
            assert "No such file or directory" in err or "Permission denied" in err, (target, err)
        out, _, _, _ = await sh(attacker, "ls -A /")
        assert set(out.split()) == {"bin", "dev", "etc", "home", "lib", "lib64", "opt", "proc", "sbin", "tmp", "usr"}
        out, _, _, _ = await sh(attacker, "ls -A /home; id -u")
        assert out.split() == ["agent", "1000"]
        # On the host: each sandbox has its own uid, and its writable dirs are private to it.
        assert attacker.uid != neighbour.uid
        home = neighbour.state.home.stat()
        assert (home.st_uid, home.st_mode & 0o777) == (neighbour.uid, 0o700)
        run = neighbour.state.run.stat()
        assert (run.st_uid, run.st_mode & 0o777) == (0, 0o700)  # the socket dir belongs to the host alone
        contained("read files", f"{len(targets)} paths absent inside; neighbour home 0700, uid {home.st_uid}")


async def test_a_sandboxs_secrets_never_show_in_host_command_lines(
    backend: NamespaceBackend, files: AgentFiles
) -> None:
    """Any host user can read every /proc/PID/cmdline: the environment must travel another way (bwrap --args)."""
    secret = f"sk-{uuid.uuid4().hex}"
    async with started(backend, files.spec(environment={"API_KEY": secret})) as sandbox:
        await wait_ping(sandbox)
        out, _, _, _ = await sh(sandbox, 'printf %s "$API_KEY"')  # type: ignore[arg-type]
        assert out == secret  # the agent does get it
        leaking = []
        for entry in Path("/proc").iterdir():
            with contextlib.suppress(OSError):
                if entry.name.isdigit() and secret.encode() in (entry / "cmdline").read_bytes():
                    leaking.append(int(entry.name))
        assert leaking == []
    contained("secrets in command lines", "API_KEY reaches the agent, no host cmdline carries it")


async def test_cannot_see_signal_or_trace_a_neighbours_processes(backend: NamespaceBackend, files: AgentFiles) -> None:
    async with pair(backend, files) as (attacker, neighbour):
        host_pids = neighbour.cgroup.pids()
        assert host_pids
        out, _, _, _ = await sh(attacker, "ls /proc | grep -E '^[0-9]+$'")
        visible = {int(p) for p in out.split()}
        assert not visible & set(host_pids)
        assert len(visible) < 10  # bwrap's init, supervisor, agent, this shell and its children only
        out, err, _, _ = await sh(attacker, " ; ".join(f"kill -9 {p}" for p in host_pids))
        assert err.count("No such process") == len(host_pids)
        nrs = {name: resolve(machine_arch(), name) for name in ("ptrace", "process_vm_readv", "pidfd_open")}
        probe = f"""
import ctypes, os
libc = ctypes.CDLL(None, use_errno=True)
for name, nr in {nrs!r}.items():
    if name == "ptrace":
        rc = libc.syscall(nr, 16, 1, 0, 0)  # PTRACE_ATTACH to this namespace's pid 1
    elif name == "process_vm_readv":
        rc = libc.syscall(nr, 1, 0, 0, 0, 0, 0)
    else:
        rc = libc.syscall(nr, {host_pids[0]}, 0)  # a neighbour's host pid
    print(name, rc, ctypes.get_errno())
"""
        out, _, code, _ = await sh(attacker, py(files, probe))
        assert code == 0
        results = {line.split()[0]: (int(line.split()[1]), int(line.split()[2])) for line in out.splitlines()}
        assert results["ptrace"] == (-1, 1)  # EPERM from seccomp
        assert results["process_vm_readv"] == (-1, 1)
        assert results["pidfd_open"][0] == -1  # ESRCH: that pid does not exist in this namespace
        contained("see/signal/trace processes", f"{len(visible)} pids visible, syscalls {results}")
        # The host sees the attacker's processes under the attacker's own leased uid.
        for pid in attacker.cgroup.pids():
            with contextlib.suppress(FileNotFoundError):
                uid_line = next(x for x in Path(f"/proc/{pid}/status").read_text().splitlines() if x.startswith("Uid:"))
                assert int(uid_line.split()[1]) in (attacker.uid, 0)  # 0: the launcher shell before setpriv
        # Killing "everything" kills only the attacker's own sandbox.
        with contextlib.suppress(Exception):
            await sh(attacker, "kill -KILL -1", timeout=5)


class _CountingHandler(http.server.BaseHTTPRequestHandler):
    hits: list[str] = []

    def do_GET(self) -> None:
        self.hits.append(self.path)
        self.send_response(200)
        self.end_headers()

    def log_message(self, *args: object) -> None:
        return


@pytest.fixture
def host_servers() -> Iterator[dict[str, int]]:
    """Real HTTP servers on the host: one on loopback (like Hangar's own port) and one on every address."""
    servers = [http.server.ThreadingHTTPServer((host, 0), _CountingHandler) for host in ("127.0.0.1", "0.0.0.0")]
    threads = [threading.Thread(target=s.serve_forever, daemon=True) for s in servers]
    for thread in threads:
        thread.start()
    _CountingHandler.hits = []
    yield {"loopback": servers[0].server_address[1], "any": servers[1].server_address[1]}
    for server in servers:
        server.shutdown()
        server.server_close()


def _host_address() -> str:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        probe.connect(("192.0.2.1", 9))  # no packet is sent: UDP connect only picks the source address
        return str(probe.getsockname()[0])


def reach_probe(targets: list[tuple[str, int]], abstract: str) -> str:
    return f"""
import socket
for host, port in {targets!r}:
    s = socket.socket()
    s.settimeout(3)
    try:
        s.connect((host, port))
        print(host, port, "CONNECTED")
    except OSError as exc:
        print(host, port, type(exc).__name__, exc.errno)
    s.close()
u = socket.socket(socket.AF_UNIX)
try:
    u.connect({abstract!r})
    print("abstract CONNECTED")
except OSError as exc:
    print("abstract", type(exc).__name__, exc.errno)
"""


@pytest.fixture
def abstract_socket() -> Iterator[str]:
    """A host service on an abstract Unix socket (these are scoped by network namespace, not by path)."""
    name = f"\0hangar-attack-{uuid.uuid4().hex}"
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(name)
    listener.listen()
    yield name
    listener.close()


async def test_public_sandbox_cannot_reach_the_host_the_gateway_or_a_neighbour(
    files: AgentFiles, host_servers: dict[str, int], abstract_socket: str
) -> None:
    """The default for PUBLIC runtimes: egress through NAT, yet nothing of the host and no other sandbox."""
    root = world_readable_dir("hangar-attack-public-")
    backend = make_backend("namespace", root, egress="allow")
    assert isinstance(backend, NamespaceBackend)
    host_ip = _host_address()
    try:
        async with pair(backend, files, network="public") as (attacker, neighbour):
            assert attacker.link is not None and neighbour.link is not None
            targets = [
                ("127.0.0.1", host_servers["loopback"]),  # refused: the sandbox's own loopback
                ("127.0.0.1", host_servers["any"]),
                (host_ip, host_servers["any"]),  # rejected by HANGAR-INPUT from here on
                (host_ip, host_servers["loopback"]),
                (attacker.link.host_ip, host_servers["any"]),  # its own gateway address: the host too
                (neighbour.link.sandbox_ip, 8000),  # rejected by HANGAR-FORWARD
            ]
            out, _, code, _ = await sh(attacker, py(files, reach_probe(targets, abstract_socket)))
    finally:
        await make_backend("namespace", root).cleanup_orphans()
        shutil.rmtree(root, ignore_errors=True)
    assert code == 0 and "CONNECTED" not in out
    lines = out.splitlines()
    for line in lines[:2]:
        assert "ConnectionRefusedError 111" in line, line
    for line in lines[2:6]:
        assert "OSError 113" in line, line  # EHOSTUNREACH: icmp-admin-prohibited from Hangar's chains
    assert "abstract ConnectionRefusedError 111" in lines[6]
    contained("reach host/neighbour over NAT", "; ".join(lines))
    assert _CountingHandler.hits == []


async def test_cannot_reach_the_host_the_gateway_or_a_neighbour(
    backend: NamespaceBackend, files: AgentFiles, host_servers: dict[str, int], abstract_socket: str
) -> None:
    host_ip = _host_address()
    targets = [
        ("127.0.0.1", host_servers["loopback"]),
        ("127.0.0.1", host_servers["any"]),
        (host_ip, host_servers["any"]),
        (host_ip, host_servers["loopback"]),
        ("127.0.0.1", 8000),  # the neighbour's agent port
        ("10.255.255.53", 53),  # the host's resolver
    ]
    async with pair(backend, files) as (attacker, _neighbour):
        out, _, code, _ = await sh(attacker, py(files, reach_probe(targets, abstract_socket)))
    assert code == 0
    assert "CONNECTED" not in out
    lines = out.splitlines()
    for line in lines[:2] + lines[4:5]:  # loopback inside the sandbox is the sandbox's own: refused
        assert "ConnectionRefusedError 111" in line, line
    for line in lines[2:4] + lines[5:6]:  # no route out of a network-less namespace
        assert "OSError 101" in line, line  # ENETUNREACH
    assert "abstract ConnectionRefusedError 111" in lines[6]  # abstract sockets belong to the host's netns
    contained("reach host/neighbour without network", "; ".join(lines))
    assert _CountingHandler.hits == []


async def test_cannot_mount_unshare_or_load_modules(backend: NamespaceBackend, files: AgentFiles) -> None:
    names = ["mount", "unshare", "setns", "init_module", "finit_module", "bpf", "keyctl", "kexec_load", "reboot"]
    nrs = {name: resolve(machine_arch(), name) for name in names}
    probe = f"""
import ctypes
libc = ctypes.CDLL(None, use_errno=True)
for name, nr in {nrs!r}.items():
    args = {{"mount": (b"none", b"/tmp", b"tmpfs", 0, None), "unshare": (0x10000000,)}}.get(name, (0, 0, 0, 0))
    ctypes.set_errno(0)
    rc = libc.syscall(nr, *args)
    print(name, rc, ctypes.get_errno())
"""
    async with pair(backend, files) as (attacker, _neighbour):
        out, _, code, _ = await sh(attacker, py(files, probe))
        assert code == 0
        for line in out.splitlines():
            assert line.split()[1:] == ["-1", "1"], line  # EPERM
        out, err, code, _ = await sh(attacker, "unshare -U true; unshare -n true; unshare -m true")
        assert code != 0 and err.count("unshare failed") == 3
        out, _, _, _ = await sh(attacker, "grep -E '^(CapEff|CapBnd|NoNewPrivs|Seccomp):' /proc/self/status")
        status = dict(line.split(":\t") for line in out.splitlines())
        assert status == {"CapEff": "0000000000000000", "CapBnd": "0000000000000000", "NoNewPrivs": "1", "Seccomp": "2"}
        contained("mount/unshare/modules", f"EPERM for {names}; {status}")


I386_GETPID = """
import ctypes, mmap
code = bytes([0xB8, 0x14, 0, 0, 0, 0xCD, 0x80, 0xC3])  # mov eax, 20 (getpid on i386); int 0x80; ret
page = mmap.mmap(-1, mmap.PAGESIZE, prot=mmap.PROT_READ | mmap.PROT_WRITE | mmap.PROT_EXEC)
page.write(code)
call = ctypes.CFUNCTYPE(ctypes.c_int)(ctypes.addressof(ctypes.c_char.from_buffer(page)))
print("i386 syscall returned", call(), flush=True)
"""


@pytest.mark.skipif(platform.machine() != "x86_64", reason="the i386 ABI exists on x86_64 only")
async def test_syscalls_through_a_foreign_abi_are_killed(backend: NamespaceBackend, files: AgentFiles) -> None:
    """A deny-list keyed on x86_64 numbers must not be bypassed through ``int 0x80`` (i386 numbers differ)."""
    async with pair(backend, files) as (attacker, _neighbour):
        out, _, code, _ = await sh(attacker, py(files, I386_GETPID))
        assert "returned" not in out
        assert code in (128 + signal.SIGSYS, -signal.SIGSYS)  # killed by seccomp's architecture check
        x32 = py(files, "import ctypes; print(ctypes.CDLL(None).syscall(0x40000000 | 39))")  # x32 getpid
        out, _, code, _ = await sh(attacker, x32)
        assert code in (128 + signal.SIGSYS, -signal.SIGSYS) or out.strip() == "-1"
        contained("foreign ABI syscalls", f"i386 int 0x80 killed by SIGSYS; x32 -> {code} {out.strip()!r}")


async def test_fork_bomb_stops_at_the_pids_limit(backend: NamespaceBackend, files: AgentFiles) -> None:
    limits = Limits(memory_bytes=256 << 20, cpus=0.5, pids=32, disk_bytes=8 << 20)
    bomb = """
import os, time
children = 0
try:
    while children < 1000:
        if os.fork() == 0:
            os.closerange(0, 3)  # the command's output ends when the parent exits
            time.sleep(60)
            os._exit(0)
        children += 1
except OSError as exc:
    print(children, type(exc).__name__, exc.errno, flush=True)
"""
    async with pair(backend, files, limits) as (attacker, _neighbour):
        out, _, _, timed_out = await sh(attacker, py(files, bomb), timeout=30)
        assert not timed_out
        forked, error, errno = out.split()
        assert int(forked) < limits.pids and (error, errno) == ("BlockingIOError", "11")  # EAGAIN from pids.max
        assert attacker.cgroup.pid_count() <= limits.pids
        contained("fork bomb", f"{forked} forks, then {error} errno {errno}; pids.max {limits.pids}")


async def test_memory_bomb_is_killed_inside_its_cgroup(backend: NamespaceBackend, files: AgentFiles) -> None:
    limits = Limits(memory_bytes=128 << 20, cpus=0.5, pids=48, disk_bytes=8 << 20)
    bomb = """
hog = []
for step in range(128):
    hog.append(bytearray(8 << 20))
    print(step, flush=True)
print("survived")
"""
    async with pair(backend, files, limits) as (attacker, _neighbour):
        before = attacker.cgroup.oom_kills()
        out, _, code, _ = await sh(attacker, py(files, bomb), timeout=60)
        assert "survived" not in out
        assert code in (137, -9)  # SIGKILL from the memory cgroup's OOM killer
        assert attacker.cgroup.oom_kills() > before
        assert len(out.split()) * (8 << 20) <= limits.memory_bytes
        assert attacker.alive()  # the biggest process died, not the sandbox
        contained(
            "memory bomb", f"exit {code}, oom_kill {attacker.cgroup.oom_kills()}, {len(out.split())} x 8 MiB allocated"
        )


async def test_filling_the_disk_stops_at_the_size_limit(backend: NamespaceBackend, files: AgentFiles) -> None:
    async with pair(backend, files) as (attacker, _neighbour):
        _, err, code, _ = await sh(attacker, 'dd if=/dev/zero of="$HOME/fill" bs=1M count=64')
        assert code != 0 and "No space left on device" in err
        out, _, _, _ = await sh(attacker, 'stat -c %s "$HOME/fill"')  # a fork's home is not in its state dir
        assert int(out) <= SMALL.disk_bytes
        _, err, code, _ = await sh(attacker, "dd if=/dev/zero of=/tmp/more bs=1M count=4")
        assert code != 0 and "No space left on device" in err  # home and /tmp share one budget
        out, err, code, _ = await sh(
            attacker, "dd if=/dev/zero of=/dev/shm/fill bs=1M count=64; stat -c %s /dev/shm/fill"
        )
        assert "No space left on device" in err and int(out.split()[-1]) <= SMALL.disk_bytes  # shm has its own cap
        contained("fill the disk", "ENOSPC in home, /tmp and /dev/shm; read-only /, /usr, /etc, code, env")
        code = STARTS.code_dir(files.code_dir)
        for target in ("/fill", "/usr/fill", f"{code}/fill", f"{files.env_dir}/fill", "/etc/fill"):
            _, err, code, _ = await sh(attacker, f"echo x > {target}")
            assert code != 0 and "Read-only file system" in err, (target, err)


FLOOD_AGENT = """
import asyncio, os, sys
import uvicorn
from starlette.applications import Starlette
from starlette.background import BackgroundTask
from starlette.responses import Response
from starlette.routing import Route

PORT = int(os.environ["PORT"])
FLOODS = set()


def flood():
    try:
        while True:
            sys.stdout.write("x" * 65536)
    except OSError:
        os._exit(1)


async def ping(request):
    return Response("{}", media_type="application/json")


async def start_flood():
    FLOODS.add(asyncio.get_running_loop().run_in_executor(None, flood))


async def invocations(request):
    # Floods once a caller names it, as a claimed session's first request would: a spare answers /ping first. The
    # flood starts after the answer is sent: it ends the process (os._exit), which must not race the answer out.
    return Response("{}", media_type="application/json", background=BackgroundTask(start_flood))


app = Starlette(routes=[Route("/ping", ping), Route("/invocations", invocations, methods=["POST"])])
if __name__ == "__main__":
    uvicorn.run(app, host="0.0.0.0", port=PORT, log_level="warning")
"""


@pytest.fixture(scope="module")
def flood_files(files: AgentFiles) -> Iterator[AgentFiles]:
    """An agent that, once it serves, prints to stdout until that fails (the same agent for both start kinds)."""
    code = world_readable_dir("hangar-flood-code-")
    (code / "main.py").write_text(FLOOD_AGENT)
    (code / "main.py").chmod(0o644)
    yield AgentFiles(env_dir=files.env_dir, code_dir=code)
    shutil.rmtree(code, ignore_errors=True)


async def test_flooding_stdout_fills_only_its_own_budget(
    backend: NamespaceBackend, files: AgentFiles, flood_files: AgentFiles
) -> None:
    spec = flood_files.spec()
    async with started(backend, files.spec(port=8000)) as neighbour, started(backend, spec) as flooder:
        assert isinstance(flooder, NamespaceSandbox)
        await wait_ping(flooder)
        async with client(flooder) as http:
            assert (await http.post("/invocations", content=b"{}")).status_code == 200
        # The flooder dies of ENOSPC on its own stdout once the log has used up its disk budget.
        assert await eventually(lambda: not flooder.alive(), timeout=30)
        log_size = flooder.log_path.stat().st_size
        assert SMALL.disk_bytes // 2 < log_size <= files.spec().limits.disk_bytes
        assert flooder.proc.returncode not in (0, None)  # its print failed (ENOSPC); the host's /run did not fill
        assert (await wait_ping(neighbour)).status_code == 200
        contained("flood stdout", f"log stopped at {log_size} bytes, flooder exit {flooder.proc.returncode}")


async def test_cpu_hog_is_throttled_by_the_quota(backend: NamespaceBackend, files: AgentFiles) -> None:
    limits = Limits(memory_bytes=256 << 20, cpus=0.2, pids=48, disk_bytes=8 << 20)
    async with pair(backend, files, limits) as (attacker, _neighbour):
        before = attacker.cgroup.cpu_throttled()
        _, _, _, timed_out = await sh(attacker, py(files, "while True: pass"), timeout=1.5)
        assert timed_out
        assert attacker.cgroup.cpu_throttled() > before
        contained("CPU hog", f"nr_throttled {before} -> {attacker.cgroup.cpu_throttled()}")


async def test_symlinks_do_not_reach_outside_the_tree(backend: NamespaceBackend, files: AgentFiles) -> None:
    canary = world_readable_dir("hangar-canary-")
    (canary / "keep").write_text("intact")
    try:
        async with pair(backend, files) as (attacker, neighbour):
            plant = (
                f'ln -s {canary} "$HOME/dir"; ln -s {canary}/keep "$HOME/file"; ln -s / "$HOME/root"; '
                f'ln -s {neighbour.state.home} /tmp/nb; echo pwned > "$HOME/file"; echo pwned > /tmp/nb/secret; '
                'echo pwned > "$HOME/root/etc/passwd"'
            )
            _, err, code, _ = await sh(attacker, plant)
            assert code != 0
            assert err.count("Directory nonexistent") == 2 and "Read-only file system" in err
            await attacker.stop()  # the host deletes the tree: it must not follow the planted links
        assert (canary / "keep").read_text() == "intact"
        contained("symlinks out of the tree", f"writes failed ({err.strip().splitlines()}); canary intact after stop")
        assert not attacker.state.path.exists()
    finally:
        shutil.rmtree(canary, ignore_errors=True)


async def test_a_double_forked_daemon_dies_with_stop(backend: NamespaceBackend, files: AgentFiles) -> None:
    marker = f"HANGAR_DAEMON_MARK={uuid.uuid4().hex}"
    async with pair(backend, files) as (attacker, _neighbour):
        double_fork = (
            "import os, time\n"
            "if os.fork() == 0:\n"
            "    os.setsid()\n"
            "    if os.fork() == 0:\n"
            "        os.closerange(0, 3); time.sleep(3000)\n"
            "    os._exit(0)\n"
            "os.wait()\n"
        )
        quiet = "</dev/null >/dev/null 2>&1"
        daemon = f"export {marker}; setsid -f sleep 3000 {quiet}; {py(files, double_fork)}; echo spawned"
        out, _, code, timed_out = await sh(attacker, daemon)
        assert (out, code, timed_out) == ("spawned\n", 0, False)
        # They left the command's group and session, and outlived the command.
        assert await eventually(lambda: len(processes_with_env(marker)) >= 2)
        await attacker.stop()
        assert processes_with_env(marker) == []
        assert attacker.cgroup.pids() == []
        contained("outlive stop", "double-forked and setsid daemons gone; cgroup empty")
