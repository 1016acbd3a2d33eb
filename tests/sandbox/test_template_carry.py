"""What an agent's import leaves behind reaches each forked session as its own copy, or the template is refused.

A cold start imports the agent inside the session, so files it writes to /tmp or its home, and files it keeps open,
belong to that session. A fork must give the same: a copy of the import's files in the session's own tmpfs and its
own open file (own offset) on each path; what cannot be copied (sockets, shared memory, processes) makes the
template unforkable, so that version's sessions start cold.
"""

from __future__ import annotations

import dataclasses
import json
import shutil
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager

import pytest

from hangar.domain.errors import HangarError
from hangar.sandbox.base import SandboxSpec, TemplateUnsafe
from hangar.sandbox.selection import namespace_unsupported_reason
from hangar.sandbox.state import list_states
from tests.sandbox.fixtures import AgentFiles, client, make_backend, wait_ping, world_readable_dir

pytestmark = [
    pytest.mark.anyio,
    pytest.mark.skipif(namespace_unsupported_reason() is not None, reason=str(namespace_unsupported_reason())),
]

if namespace_unsupported_reason() is None:
    from hangar.sandbox.namespace.backend import NamespaceBackend

SERVE = """
import uvicorn
from starlette.applications import Starlette
from starlette.responses import JSONResponse
from starlette.routing import Route

async def ping(request):
    return JSONResponse({"status": "Healthy"})

ROUTES = [Route("/ping", ping)]
"""
RUN = """
app = Starlette(routes=ROUTES)
if __name__ == "__main__":
    uvicorn.run(app, host="0.0.0.0", port=int(os.environ["PORT"]))
"""
CARRIES = (
    """
import os
from pathlib import Path
"""
    + SERVE
    + """
CACHE = Path("/tmp/cache/data.txt")
CACHE.parent.mkdir()
CACHE.write_text("from-import")
HOME_NOTE = Path(os.environ["HOME"], "note.txt")
HOME_NOTE.write_text("home-from-import")
Path("/dev/shm/segment").write_text("shm-from-import")
LOG = open("/tmp/agent.log", "a")
LOG.write("imported\\n")
LOG.flush()
SOURCE = open(__file__, "rb")  # read-only, on the read-only code dir, with an offset that must stay per session
SOURCE.read(10)

async def invocations(request):
    marker = (await request.json())["marker"]
    LOG.write(marker + "\\n")
    LOG.flush()
    before = CACHE.read_text()
    CACHE.write_text(before + "+" + marker)
    return JSONResponse({
        "log": Path("/tmp/agent.log").read_text().split(),
        "cache_before": before,
        "home": HOME_NOTE.read_text(),
        "shm": Path("/dev/shm/segment").read_text(),
        "source_next": SOURCE.read(5).decode(),
    })

ROUTES.append(Route("/invocations", invocations, methods=["POST"]))
"""
    + RUN
)
REFUSED = {
    "socket": ("import socket\nHELD = socket.socket()\n", "keeps socket"),
    "shared memory": ("import mmap\nHELD = mmap.mmap(-1, 4096)\n", "shared writable memory"),
    "a process": ("import subprocess\nHELD = subprocess.Popen(['sleep', '600'])\n", "started processes"),
    "a pipe": ("HELD = os.pipe()\n", "keeps pipe"),
    "a timer": ("import signal\nsignal.setitimer(signal.ITIMER_REAL, 3600)\n", "armed timers"),
}


@pytest.fixture(scope="module")
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture(scope="module")
def backend() -> Iterator[NamespaceBackend]:
    root = world_readable_dir("hangar-template-carry-")
    backend = make_backend("namespace", root)
    assert isinstance(backend, NamespaceBackend)
    yield backend
    shutil.rmtree(root, ignore_errors=True)


@asynccontextmanager
async def code_spec(agent_files: AgentFiles, main_py: str) -> AsyncIterator[SandboxSpec]:
    code = world_readable_dir("hangar-template-carry-code-")
    (code / "main.py").write_text(main_py)
    (code / "main.py").chmod(0o644)
    try:
        yield dataclasses.replace(agent_files.spec(), code_dir=code)
    finally:
        shutil.rmtree(code, ignore_errors=True)


async def invoke(sandbox: object, marker: str) -> dict[str, object]:
    async with client(sandbox) as http:  # type: ignore[arg-type]
        response = await http.post("/invocations", json={"marker": marker})
    assert response.status_code == 200, response.text
    return json.loads(response.text)


async def test_each_fork_gets_its_own_copy_of_what_the_import_left(
    backend: NamespaceBackend, agent_files: AgentFiles
) -> None:
    async with code_spec(agent_files, CARRIES) as spec:
        template = await backend.start_template(spec)
        forks = []
        try:
            for index in range(2):
                sandbox = await backend.fork(
                    template, dataclasses.replace(spec, sandbox_id=f"{spec.sandbox_id}-{index}")
                )
                forks.append(sandbox)
                assert (await wait_ping(sandbox)).status_code == 200
            first = await invoke(forks[0], "first")
            second = await invoke(forks[1], "second")
            again = await invoke(forks[0], "again")
        finally:
            for sandbox in forks:
                await sandbox.stop()
            await template.stop()
    source = CARRIES.encode()  # what main.py holds
    assert first["log"] == ["imported", "first"] and second["log"] == ["imported", "second"]
    assert first["cache_before"] == second["cache_before"] == "from-import"  # the other fork's write is not seen
    assert again["cache_before"] == "from-import+first" and again["log"] == ["imported", "first", "again"]
    assert first["home"] == second["home"] == "home-from-import"
    assert first["shm"] == second["shm"] == "shm-from-import"
    # each fork has its own open file on the read-only source: the same five bytes after the import's ten
    expected = source[10:15].decode()
    assert first["source_next"] == second["source_next"] == expected
    assert again["source_next"] == source[15:20].decode()


@pytest.mark.parametrize("what", sorted(REFUSED))
async def test_what_cannot_be_copied_into_a_session_refuses_the_template(
    backend: NamespaceBackend, agent_files: AgentFiles, what: str
) -> None:
    held, reason = REFUSED[what]
    main_py = "import os\n" + held + SERVE + RUN
    async with code_spec(agent_files, main_py) as spec:
        with pytest.raises(TemplateUnsafe, match=reason):
            await backend.start_template(spec)
    assert not (backend.state_root / spec.sandbox_id).exists()


TAMPERS = {
    "keeps its capabilities": "sys.modules['_hangar_isolate'].drop_privileges = lambda uid: None\n",
    "skips the session filter": "sys.modules['_hangar_isolate'].load_seccomp = lambda program: None\n",
    "stays in the template's namespaces": "sys.modules['_hangar_isolate'].unshare = lambda flags: None\n",
}


@pytest.mark.parametrize("tamper", sorted(TAMPERS))
async def test_a_fork_whose_isolation_was_tampered_with_at_import_is_refused(
    backend: NamespaceBackend, agent_files: AgentFiles, tamper: str
) -> None:
    """Import-time code runs in the template, so it can patch the zygote's own isolation code: the host checks each
    fork from /proc before anything of the agent runs again, refuses it and retires the template."""
    main_py = "import os, sys\n" + TAMPERS[tamper] + SERVE + RUN
    before = {state.sandbox_id for state in list_states(backend.state_root)}
    async with code_spec(agent_files, main_py) as spec:
        template = await backend.start_template(spec)
        try:
            with pytest.raises(HangarError, match="isolat") as refused:
                sandbox = await backend.fork(template, dataclasses.replace(spec, sandbox_id=f"{spec.sandbox_id}-t"))
                await sandbox.stop()
            assert not template.alive(), (
                refused.value
            )  # it takes no more forks (unsafe, or broken and restarted by its owner)
        finally:
            await template.stop()
    assert {state.sandbox_id for state in list_states(backend.state_root)} <= before  # the refused fork left nothing
