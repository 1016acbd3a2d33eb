"""``Sandbox.open_shell`` on every backend that runs the supervisor: a pty shell inside the sandbox (its controlling
terminal, its size, its exit status, a hangup), and no shell process left once the sandbox stops.

The process backend runs everywhere; namespace (cold and forked from a warm template) and gVisor are skipped where
they cannot run (a failure under HANGAR_REQUIRE_ISOLATION=1).
"""

from __future__ import annotations

import asyncio
import dataclasses
import re
import shutil
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from pathlib import Path

import pytest

from hangar.sandbox.base import Sandbox, SandboxBackend, SandboxSpec
from hangar.sandbox.gvisor.host import unsupported_reason
from hangar.sandbox.selection import namespace_unsupported_reason
from hangar.sandbox.shell import ShellEvent, ShellProcess
from hangar.sandbox.state import instance_tag
from tests.sandbox.fixtures import (
    AgentFiles,
    eventually,
    make_backend,
    processes_with_env,
    wait_ping,
    world_readable_dir,
)

pytestmark = pytest.mark.anyio
NAMESPACE = namespace_unsupported_reason()
GVISOR = unsupported_reason("runsc", "ptrace")
KINDS = [
    pytest.param("process"),
    pytest.param("namespace", marks=pytest.mark.skipif(NAMESPACE is not None, reason=str(NAMESPACE))),
    pytest.param("fork", marks=pytest.mark.skipif(NAMESPACE is not None, reason=str(NAMESPACE))),
    pytest.param("gvisor", marks=pytest.mark.skipif(GVISOR is not None, reason=f"gVisor cannot run here: {GVISOR}")),
]


@pytest.fixture(scope="module")
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture(scope="module")
def state_root() -> Iterator[Path]:
    root = world_readable_dir("hangar-shells-")
    yield root
    shutil.rmtree(root, ignore_errors=True)


def _backend(kind: str, root: Path) -> SandboxBackend:
    if kind == "gvisor":
        from hangar.sandbox.gvisor import GVisorBackend

        return GVisorBackend(state_root=root, tag=instance_tag(root) + "g")
    return make_backend("namespace" if kind == "fork" else kind, root)


@asynccontextmanager
async def sandbox_of(kind: str, root: Path, spec: SandboxSpec) -> AsyncIterator[Sandbox]:
    backend = _backend(kind, root)
    template = None
    try:
        if kind == "fork":
            template = await backend.start_template(dataclasses.replace(spec, sandbox_id=f"t-{uuid.uuid4().hex[:12]}"))
            sandbox = await backend.fork(template, spec)
        else:
            sandbox = await backend.start(spec)
        try:
            await wait_ping(sandbox)
            yield sandbox
        finally:
            await sandbox.stop()
    finally:
        if template is not None:
            await template.stop()
        await backend.cleanup_orphans()


async def output_until(shell: ShellProcess, pattern: str, seen: bytearray) -> ShellEvent | None:
    """Read until ``pattern`` shows in the output so far or the shell ends; the ending event, if it ended."""
    while not re.search(pattern, seen.decode(errors="replace")):
        try:
            event = await asyncio.wait_for(shell.read(), 30)
        except TimeoutError:
            raise AssertionError(f"{pattern!r} not in the shell's output: {bytes(seen)!r}") from None
        if event is None or event.kind == "exit":
            return event
        seen += event.data
    return None


@pytest.mark.parametrize("kind", KINDS)
async def test_a_pty_shell_runs_resizes_exits_and_dies_with_its_sandbox(
    kind: str, agent_files: AgentFiles, state_root: Path
) -> None:
    marker = f"shell-{uuid.uuid4().hex[:10]}"
    spec = agent_files.spec(environment={"SHELL_MARK": marker})
    async with sandbox_of(kind, state_root, spec) as sandbox:
        shell = await sandbox.open_shell(90, 33)
        seen = bytearray()
        await shell.write(b"stty size; tty; echo mark=$SHELL_MARK; ps -o stat= -p $$\n")
        await output_until(shell, rf"33 90\r\n/dev/pts/\d+\r\nmark={marker}\r\n\S*s\S*\r\n", seen)  # session leader
        await shell.resize(120, 50)
        await shell.write(b"stty size\n")
        await output_until(shell, r"50 120\r\n", seen)
        await shell.write(b"exit 7\n")
        end = bytearray()
        event = await output_until(shell, r"(?!)", end)
        assert event is not None and (event.exit_code, event.signal) == (7, None), event
        await shell.close()

        # A hangup ends the shell with SIGHUP's status; a shell still running when the sandbox stops is killed.
        hung = await sandbox.open_shell(80, 24)
        await hung.write(b"echo ready\n")
        await output_until(hung, "ready", bytearray())
        await hung.hangup()
        event = await output_until(hung, r"(?!)", bytearray())
        assert event is not None and (event.exit_code, event.signal) == (129, 1), event
        doomed = await sandbox.open_shell(80, 24)
        await doomed.write(b"sleep 1000 & sleep 1000\n")
        await asyncio.sleep(0.3)
    event = await output_until(doomed, r"(?!)", bytearray())
    assert event is None or event.kind == "exit"
    assert await eventually(lambda: not processes_with_env(marker))
    await doomed.close()
