"""A stop answers once the sandbox is dead (``SupervisedSandbox.dead``, what StopRuntimeSession waits for): at that
moment no process the session started can run its own code, whether the agent was idle, mid-call, ignoring SIGTERM,
or had left a command behind in a session of its own that ignores SIGTERM too.

"Can run" is read from the host's ``/proc``: a process counts as dead once it is gone, a zombie, or every one of its
threads is exiting (``PF_EXITING`` in the task flags; what the cgroup's ``cgroup.procs`` also goes by), checked at
the very moment ``dead`` is set, before the release behind it. Forked sessions of a warm template (the stop path the
churn takes, with the template's quick uvicorn shutdown).
"""

from __future__ import annotations

import asyncio
import shutil
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import httpx
import pytest

from hangar.sandbox.selection import namespace_unsupported_reason
from tests.sandbox.fixtures import (
    AgentFiles,
    build_agent_env,
    client,
    eventually,
    forked,
    namespace_backend,
    run_exec,
    started_template,
    world_readable_dir,
)

pytestmark = [
    pytest.mark.anyio,
    pytest.mark.skipif(namespace_unsupported_reason() is not None, reason=str(namespace_unsupported_reason())),
]

if namespace_unsupported_reason() is None:
    from hangar.sandbox.namespace.backend import NamespaceBackend, NamespaceSandbox
    from hangar.sandbox.namespace.templates import NamespaceTemplate

PF_EXITING = 0x4
AGENT = """
import asyncio, os, signal
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route


async def ping(request: Request) -> JSONResponse:
    return JSONResponse({"status": "Healthy"})


async def invocations(request: Request) -> JSONResponse:
    what = (await request.body()).decode()
    if what == "ignore":  # from now on this agent ignores SIGTERM: only a kill ends it
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
    elif what == "hang":
        print("in flight", flush=True)
        await asyncio.sleep(3600)
    return JSONResponse({"pid": os.getpid()})


app = Starlette(routes=[Route("/ping", ping), Route("/invocations", invocations, methods=["POST"])])

if __name__ == "__main__":
    uvicorn.run(app, host="0.0.0.0", port=int(os.environ["PORT"]), log_level="warning")
"""
# A command that leaves, in a session of its own, a process that ignores SIGTERM (what a stop must still kill).
LEFT_BEHIND = (
    "setsid sh -c \"trap '' TERM; touch /tmp/escaped; exec sleep 600\" </dev/null >/dev/null 2>&1 & "
    "while [ ! -e /tmp/escaped ]; do sleep 0.01; done"  # in its own session before the command ends
)


@pytest.fixture(scope="module")
def anyio_backend() -> str:
    return "asyncio"  # one loop for the module: the template outlives a test


@pytest.fixture(scope="module")
def files() -> Iterator[AgentFiles]:
    code = world_readable_dir("hangar-stop-dead-")
    (code / "main.py").write_text(AGENT)
    (code / "main.py").chmod(0o644)
    yield AgentFiles(env_dir=build_agent_env(), code_dir=code)
    shutil.rmtree(code, ignore_errors=True)


@pytest.fixture(scope="module")
def backend() -> Iterator[NamespaceBackend]:
    with namespace_backend("hangar-stop-dead-root-") as backend:
        yield backend


@pytest.fixture(scope="module")
async def template(backend: NamespaceBackend, files: AgentFiles) -> AsyncIterator[NamespaceTemplate]:
    async with started_template(backend, files.spec()) as template:
        yield template


def _stat_fields(path: str) -> list[str] | None:
    try:
        return Path(path).read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None


def start_time(pid: int) -> str | None:
    fields = _stat_fields(f"/proc/{pid}/stat")
    return None if fields is None else fields[19]


def can_run(pid: int, started: str) -> bool:
    """True while some thread of the process ``pid`` that started at ``started`` may still run its own code."""
    if start_time(pid) != started:
        return False  # gone (or its pid reused)
    try:
        threads = [entry.name for entry in Path(f"/proc/{pid}/task").iterdir()]
    except OSError:
        return False
    for tid in threads:
        fields = _stat_fields(f"/proc/{pid}/task/{tid}/stat")
        if fields is not None and fields[0] not in ("Z", "X") and not int(fields[6]) & PF_EXITING:
            return True
    return False


async def stop_and_look(sandbox: NamespaceSandbox, processes: dict[int, str]) -> list[int]:
    """Stop ``sandbox``; the pids of ``processes`` that could still run when ``dead`` was set (the stop's answer)."""
    stopping = asyncio.ensure_future(sandbox.stop())
    await sandbox.dead.wait()
    running = [pid for pid, started in processes.items() if can_run(pid, started)]
    await stopping
    return running


def snapshot(sandbox: NamespaceSandbox) -> dict[int, str]:
    """The sandbox's processes that can run now (a command's shell may still be on its way out)."""
    processes = {pid: started for pid in sandbox.cgroup.pids() if (started := start_time(pid)) is not None}
    return {pid: started for pid, started in processes.items() if can_run(pid, started)}


async def test_an_idle_fork_with_a_kept_alive_connection_is_dead_when_the_stop_answers(
    backend: NamespaceBackend, template: NamespaceTemplate, files: AgentFiles
) -> None:
    async with forked(backend, template, files.spec()) as sandbox, client(sandbox) as http:
        assert (await http.post("/invocations", content=b"hello")).status_code == 200  # left open: keep-alive
        processes = snapshot(sandbox)
        assert len(processes) >= 2  # the session's own processes (pid 1 may be its supervisor)
        assert await stop_and_look(sandbox, processes) == []
    assert not sandbox.alive() and sandbox.cgroup.pids() == []


async def test_an_agent_mid_call_ignoring_sigterm_and_what_it_left_behind_are_dead_when_the_stop_answers(
    backend: NamespaceBackend, template: NamespaceTemplate, files: AgentFiles
) -> None:
    async with forked(backend, template, files.spec()) as sandbox, client(sandbox) as http:
        assert (await http.post("/invocations", content=b"ignore")).status_code == 200
        _, err, code, _ = await run_exec(sandbox, LEFT_BEHIND)
        assert code == 0, err
        hung = asyncio.ensure_future(http.post("/invocations", content=b"hang", timeout=60))
        assert await eventually(lambda: b"in flight" in sandbox.log_path.read_bytes(), timeout=30)
        processes = snapshot(sandbox)
        assert len(processes) >= 3  # the session's own processes and the one left behind
        assert await stop_and_look(sandbox, processes) == []
        with pytest.raises(httpx.TransportError):
            await hung  # the call in flight ends with its sandbox, unanswered
    assert not sandbox.alive() and sandbox.cgroup.pids() == []
