"""Fixtures shared by the sandbox contract suite and the attacker suite (import them into the test module).

The agent environment is built for real, as the artifacts builder does: ``uv venv`` on Debian's world-readable
``/usr/bin/python3.11`` plus starlette and uvicorn, in a world-readable directory a sandbox uid can read.
"""

from __future__ import annotations

import asyncio
import shutil
import subprocess
import sys
import tempfile
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import httpx
import pytest

from hangar.sandbox.base import Limits, Sandbox, SandboxBackend, SandboxSpec
from hangar.sandbox.state import instance_tag

if TYPE_CHECKING:
    from hangar.sandbox.namespace.backend import NamespaceBackend, NamespaceSandbox
    from hangar.sandbox.namespace.templates import NamespaceTemplate

HERE = Path(__file__).parent
SYSTEM_PYTHON = "/usr/bin/python3.11"
REQUIREMENTS = ("starlette>=0.46,<2", "uvicorn>=0.30,<1")
ENV_CACHE = Path("/tmp/hangar-test-agent-env-v1")
UV = Path(sys.executable).with_name("uv")
PING_TIMEOUT_S = 30.0


def world_readable_dir(prefix: str) -> Path:
    path = Path(tempfile.mkdtemp(prefix=prefix, dir="/tmp"))
    path.chmod(0o755)
    return path


def build_agent_env() -> Path:
    """The virtualenv every test sandbox runs; built once per machine (the cache key names the requirements)."""
    env = ENV_CACHE / "env"
    if (ENV_CACHE / "ready").exists():
        return env
    shutil.rmtree(ENV_CACHE, ignore_errors=True)
    ENV_CACHE.mkdir(mode=0o755)
    subprocess.run([str(UV), "venv", "--quiet", "--python", SYSTEM_PYTHON, str(env)], check=True, timeout=120)
    subprocess.run(
        [str(UV), "pip", "install", "--quiet", "--python", str(env / "bin" / "python"), *REQUIREMENTS],
        check=True,
        timeout=300,
    )
    subprocess.run(["chmod", "-R", "a+rX", str(ENV_CACHE)], check=True, timeout=60)
    (ENV_CACHE / "ready").touch()
    return env


@dataclass
class AgentFiles:
    env_dir: Path
    code_dir: Path
    specs: list[str] = field(default_factory=list)

    def spec(
        self,
        *,
        limits: Limits | None = None,
        environment: dict[str, str] | None = None,
        network: str = "none",
        port: int = 8080,
    ) -> SandboxSpec:
        sandbox_id = f"t-{uuid.uuid4().hex[:12]}"
        return SandboxSpec(
            sandbox_id=sandbox_id,
            code_dir=self.code_dir,
            env_dir=self.env_dir,
            command=(str(self.env_dir / "bin" / "python"), "main.py"),
            agent_port=port,
            limits=limits or Limits(memory_bytes=256 << 20, cpus=0.5, pids=64, disk_bytes=32 << 20),
            environment=environment or {},
            network=network,  # type: ignore[arg-type]
        )


def prepared_agent_files() -> Iterator[AgentFiles]:
    """The env (cached per machine) and a fresh code dir holding tests/sandbox/agent_app.py as main.py."""
    env = build_agent_env()
    code = world_readable_dir("hangar-test-code-")
    shutil.copy(HERE / "agent_app.py", code / "main.py")
    (code / "main.py").chmod(0o644)
    yield AgentFiles(env_dir=env, code_dir=code)
    shutil.rmtree(code, ignore_errors=True)


@pytest.fixture(scope="session")
def agent_files() -> Iterator[AgentFiles]:
    yield from prepared_agent_files()


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def client(sandbox: Sandbox) -> httpx.AsyncClient:
    transport = httpx.AsyncHTTPTransport(uds=str(sandbox.socket_path))
    return httpx.AsyncClient(transport=transport, base_url="http://agent", timeout=10.0)


async def wait_ping(sandbox: Sandbox, timeout: float = PING_TIMEOUT_S) -> httpx.Response:
    """Poll /ping through the sandbox's socket until the agent answers (bounded)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    async with client(sandbox) as http:
        while True:
            try:
                return await http.get("/ping")
            except httpx.TransportError:
                if loop.time() > deadline or not sandbox.alive():
                    raise
                await asyncio.sleep(0.01)


@asynccontextmanager
async def started(backend: SandboxBackend, spec: SandboxSpec) -> AsyncIterator[Sandbox]:
    """A sandbox that is stopped however the test ends."""
    sandbox = await backend.start(spec)
    try:
        yield sandbox
    finally:
        await sandbox.stop()


async def run_exec(sandbox: Sandbox, command: str, timeout: float = 20.0) -> tuple[bytes, bytes, int | None, bool]:
    out, err = bytearray(), bytearray()
    async for event in sandbox.exec(command, timeout):
        if event.kind == "stdout":
            out += event.data
        elif event.kind == "stderr":
            err += event.data
        else:
            return bytes(out), bytes(err), event.exit_code, event.timed_out
    raise AssertionError("exec ended without an exit event")


def make_backend(name: str, state_root: Path, egress: str = "deny") -> SandboxBackend:
    if name == "process":
        from hangar.sandbox.process import ProcessBackend

        return ProcessBackend(state_root=state_root)
    from hangar.sandbox.namespace import NamespaceBackend

    return NamespaceBackend(state_root=state_root, tag=instance_tag(state_root), egress=egress)  # type: ignore[arg-type]


@contextmanager
def namespace_backend(prefix: str, egress: str = "deny") -> Iterator[NamespaceBackend]:
    """A namespace backend on a state root of its own; what it leaves (orphans, the root) is removed after."""
    from hangar.sandbox.namespace.backend import NamespaceBackend

    root = world_readable_dir(prefix)
    backend = make_backend("namespace", root, egress=egress)
    assert isinstance(backend, NamespaceBackend)
    try:
        yield backend
    finally:
        asyncio.run(make_backend("namespace", root).cleanup_orphans())
        shutil.rmtree(root, ignore_errors=True)


@asynccontextmanager
async def started_template(backend: NamespaceBackend, spec: SandboxSpec) -> AsyncIterator[NamespaceTemplate]:
    """A warm template of ``spec``, stopped after."""
    from hangar.sandbox.namespace.templates import NamespaceTemplate

    template = await backend.start_template(spec)
    assert isinstance(template, NamespaceTemplate)
    try:
        yield template
    finally:
        await template.stop()


@asynccontextmanager
async def forked(
    backend: NamespaceBackend, template: NamespaceTemplate, spec: SandboxSpec
) -> AsyncIterator[NamespaceSandbox]:
    """A session forked from ``template``, answering ``/ping``; stopped however the test ends (a template waits for
    its sessions when it stops)."""
    from hangar.sandbox.namespace.backend import NamespaceSandbox

    sandbox = await backend.fork(template, spec)
    assert isinstance(sandbox, NamespaceSandbox)
    try:
        assert (await wait_ping(sandbox)).status_code == 200
        yield sandbox
    finally:
        await sandbox.stop()


def processes_with_env(marker: str) -> list[int]:
    """Host pids whose environment contains ``marker`` (root reads every /proc/PID/environ)."""
    needle = marker.encode()
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            if needle in (entry / "environ").read_bytes().split(b"\0"):
                found.append(int(entry.name))
        except OSError:
            continue
    return found


def encode_spec(spec: SandboxSpec) -> dict[str, object]:
    return {
        **spec.__dict__,
        "code_dir": str(spec.code_dir),
        "env_dir": str(spec.env_dir),
        "limits": spec.limits.__dict__,
        "environment": dict(spec.environment),
    }


def decode_spec(data: dict[str, object]) -> SandboxSpec:
    return SandboxSpec(
        **{  # type: ignore[arg-type]
            **data,
            "code_dir": Path(str(data["code_dir"])),
            "env_dir": Path(str(data["env_dir"])),
            "limits": Limits(**data["limits"]),  # type: ignore[arg-type]
            "command": tuple(data["command"]),  # type: ignore[call-overload]
        }
    )


async def eventually(condition: Callable[[], object], timeout: float = 5.0) -> bool:
    """Poll ``condition`` until it holds or ``timeout`` passes (bounded); returns its last truth value."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not condition():
        if loop.time() > deadline:
            return False
        await asyncio.sleep(0.01)
    return True
