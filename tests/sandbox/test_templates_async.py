"""Warm templates of agents that serve from async code (``asyncio.run(main())`` → ``uvicorn.Server.serve``): the
template stops where ``main.py`` enters its event loop, before the loop exists, and every session makes its own.

The isolation tests of ``test_templates.py`` that use the module's template run again here against a template of
the same agent started that way (their ``agent_files`` is the async variant), beside what is particular to the
loop entry: which entry is the fork point, what cannot fork and why, and a loop that ends without serving.
"""

from __future__ import annotations

import dataclasses
import re
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from hangar.domain.errors import HangarError
from hangar.sandbox.base import SandboxSpec, TemplateUnsafe
from hangar.sandbox.selection import namespace_unsupported_reason
from tests.sandbox import test_templates as base
from tests.sandbox.async_agent import async_agent_files
from tests.sandbox.fixtures import AgentFiles, client, prepared_agent_files
from tests.sandbox.test_templates import code_dir_with, forked

# The module's fixtures and its template's isolation tests, collected here against the async-started template.
anyio_backend, backend, template = base.anyio_backend, base.backend, base.template
test_a_fork_answers_ping_and_invocations = base.test_a_fork_answers_ping_and_invocations
test_each_fork_runs_as_its_own_host_uid = base.test_each_fork_runs_as_its_own_host_uid
test_two_forks_share_no_memory_files_or_channels = base.test_two_forks_share_no_memory_files_or_channels
test_a_fork_cannot_read_the_templates_home_or_tmp = base.test_a_fork_cannot_read_the_templates_home_or_tmp

pytestmark = [
    pytest.mark.anyio,
    pytest.mark.skipif(namespace_unsupported_reason() is not None, reason=str(namespace_unsupported_reason())),
]

if namespace_unsupported_reason() is None:
    from hangar.sandbox.namespace.backend import NamespaceBackend
    from hangar.sandbox.namespace.templates import NamespaceTemplate


@pytest.fixture(scope="module")
def agent_files() -> Iterator[AgentFiles]:
    for files in prepared_agent_files():
        yield from async_agent_files(files)


STATE_AT_IMPORT = """
import asyncio, os, threading
import uvicorn
from starlette.applications import Starlette
from starlette.responses import JSONResponse
from starlette.routing import Route

SEEN = []
LOOPS_AT_IMPORT = asyncio.run(asyncio.sleep(0, result=1))  # set-up at import: runs once, in the template


async def ping(request):
    return JSONResponse({"status": "Healthy"})


async def remember(request):
    SEEN.append(request.query_params["note"])
    loop = asyncio.get_running_loop()
    return JSONResponse({"seen": SEEN, "setup": LOOPS_AT_IMPORT, "threads": threading.active_count(),
                         "loop": id(loop), "pid": os.getpid()})


app = Starlette(routes=[Route("/ping", ping), Route("/remember", remember)])


async def main():
    await uvicorn.Server(uvicorn.Config(app, host="0.0.0.0", port=int(os.environ["PORT"]), log_level="warning")).serve()

if __name__ == "__main__":
    asyncio.run(main())
"""
OWN_LOOP = """
import asyncio, os
import uvicorn
from starlette.applications import Starlette

app = Starlette()
loop = asyncio.new_event_loop()  # an epoll fd and a self-pipe made before the coroutine is handed over
config = uvicorn.Config(app, host="0.0.0.0", port=int(os.environ["PORT"]))
if __name__ == "__main__":
    loop.run_until_complete(uvicorn.Server(config).serve())
"""
THREAD_AT_IMPORT = """
import asyncio, os, threading, time
import uvicorn
from starlette.applications import Starlette

threading.Thread(target=time.sleep, args=(3600,), name="import-time-worker", daemon=True).start()
app = Starlette()
if __name__ == "__main__":
    asyncio.run(uvicorn.Server(uvicorn.Config(app, host="0.0.0.0", port=int(os.environ["PORT"]))).serve())
"""
SETUP_THEN_UVICORN_RUN = """
import asyncio, os
import uvicorn
from starlette.applications import Starlette
from starlette.responses import JSONResponse
from starlette.routing import Route

STATE = {}


async def setup():
    STATE["loops"] = STATE.get("loops", 0) + 1


async def ping(request):
    return JSONResponse({"status": "Healthy", "setups": STATE["loops"], "pid": os.getpid()})

app = Starlette(routes=[Route("/ping", ping)])
if __name__ == "__main__":
    asyncio.run(setup())  # the fork point: each session runs it, then the rest of main.py
    uvicorn.run(app, host="0.0.0.0", port=int(os.environ["PORT"]), log_level="warning")
"""
RAW_ASYNCIO_SERVER = """
import asyncio, json, os

BODY = json.dumps({"status": "Healthy", "server": "raw asyncio"}).encode()


async def answer(reader, writer):
    await reader.readuntil(b"\\r\\n\\r\\n")
    head = b"HTTP/1.1 200 OK\\r\\nContent-Type: application/json\\r\\nContent-Length: %d\\r\\n\\r\\n" % len(BODY)
    writer.write(head + BODY)
    await writer.drain()
    writer.close()


async def main():
    server = await asyncio.start_server(answer, "0.0.0.0", int(os.environ["PORT"]))
    async with server:
        await server.serve_forever()

if __name__ == "__main__":
    asyncio.run(main())
"""
SETUP_THEN_STDLIB_SERVER = """
import asyncio, http.server, json, os


class Ping(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        body = json.dumps({"status": "Healthy", "server": "http.server"}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


if __name__ == "__main__":
    asyncio.run(asyncio.sleep(0))  # the fork point; no event loop serves
    http.server.HTTPServer(("0.0.0.0", int(os.environ["PORT"])), Ping).serve_forever()
"""
NEVER_SERVES = """
import asyncio

async def main():
    await asyncio.sleep(0)

if __name__ == "__main__":
    asyncio.run(main())  # the fork point, but nothing listens
"""


async def test_state_made_at_import_is_each_forks_own_and_each_has_its_own_loop(
    backend: NamespaceBackend, agent_files: AgentFiles
) -> None:
    code = code_dir_with(STATE_AT_IMPORT)
    own = await backend.start_template(_with_code(agent_files, code))
    assert isinstance(own, NamespaceTemplate)
    try:
        async with (
            forked(backend, own, _with_code(agent_files, code)) as one,
            forked(backend, own, _with_code(agent_files, code)) as two,
            client(one) as a,
            client(two) as b,
        ):
            first = (await a.get("/remember", params={"note": "one"})).json()
            second = (await b.get("/remember", params={"note": "two"})).json()
            again = (await a.get("/remember", params={"note": "three"})).json()
        assert first["seen"] == ["one"] and second["seen"] == ["two"] and again["seen"] == ["one", "three"]
        assert first["setup"] == second["setup"] == 1 and first["threads"] == second["threads"] == 1
        assert own.alive()
    finally:
        await own.stop()
        shutil.rmtree(code, ignore_errors=True)


@pytest.mark.parametrize(
    ("source", "reason"),
    [
        (OWN_LOOP, "inside an event loop (entered at main.py:10) that Hangar cannot fork before"),
        (THREAD_AT_IMPORT, "the template runs 2 threads (import-time-worker)"),
    ],
    ids=["own-loop", "thread-at-import"],
)
async def test_what_cannot_fork_says_why(
    backend: NamespaceBackend, agent_files: AgentFiles, source: str, reason: str
) -> None:
    code = code_dir_with(source)
    try:
        with pytest.raises(TemplateUnsafe, match=re.escape(reason)):
            await backend.start_template(_with_code(agent_files, code))
    finally:
        shutil.rmtree(code, ignore_errors=True)


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        (SETUP_THEN_UVICORN_RUN, {"status": "Healthy", "setups": 1}),
        (RAW_ASYNCIO_SERVER, {"server": "raw asyncio"}),
        (SETUP_THEN_STDLIB_SERVER, {"server": "http.server"}),
    ],
    ids=["setup-then-uvicorn-run", "asyncio-not-uvicorn", "setup-then-stdlib-server"],
)
async def test_a_session_resumed_at_its_loop_entry_runs_the_rest_of_main_py(
    backend: NamespaceBackend, agent_files: AgentFiles, source: str, expected: dict[str, object]
) -> None:
    """Set-up in the guarded block before ``uvicorn.run`` (the session runs both), or a server that is not uvicorn,
    in the loop or after it (ready once something listens on the agent's port): each forks and answers."""
    code = code_dir_with(source)
    own = await backend.start_template(_with_code(agent_files, code))
    try:
        async with forked(backend, own, _with_code(agent_files, code)) as sandbox, client(sandbox) as http:
            answer = (await http.get("/ping")).json()
        assert expected.items() <= answer.items(), answer
    finally:
        await own.stop()
        shutil.rmtree(code, ignore_errors=True)


async def test_a_loop_that_ends_without_serving_fails_its_session_clearly(
    backend: NamespaceBackend, agent_files: AgentFiles
) -> None:
    code = code_dir_with(NEVER_SERVES)
    own = await backend.start_template(_with_code(agent_files, code))
    try:
        with pytest.raises(
            HangarError, match=r"entered at main\.py:8 \(its fork point\) ended before uvicorn listened"
        ):
            sandbox = await backend.fork(own, _with_code(agent_files, code))
            await sandbox.stop()
        assert own.alive()
    finally:
        await own.stop()
        shutil.rmtree(code, ignore_errors=True)


def _with_code(files: AgentFiles, code: Path) -> SandboxSpec:
    return dataclasses.replace(files.spec(), code_dir=code)
