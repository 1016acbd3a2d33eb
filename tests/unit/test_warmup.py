"""sandbox/warmup.py: what a warm template pays for its forks' first requests, and what it must never do.

The warm-up runs in a template that is then forked, so beyond "it imports the first-use modules" these tests pin
its limits: no thread, no fd, no event loop left behind, nothing imported for a package the agent did not use, and
no middleware of the agent's own constructed ahead of Starlette's first call.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.middleware.gzip import GZipMiddleware

from hangar.sandbox import warmup

WARMUP = Path(warmup.__file__)


class AgentsOwnMiddleware:
    """Stands for an agent's middleware: its constructor may do anything, so the warm-up must not call it."""

    constructed = 0

    def __init__(self, app: Any) -> None:
        AgentsOwnMiddleware.constructed += 1
        self.app = app


class Wrapper:
    """The shape of uvicorn's wrappers around the app (ProxyHeadersMiddleware and friends): ``.app`` inside."""

    def __init__(self, app: Any) -> None:
        self.app = app


def test_builds_a_starlette_stack_of_known_middleware_through_wrappers() -> None:
    app = Starlette(middleware=[Middleware(GZipMiddleware)])
    assert app.middleware_stack is None  # Starlette builds it on the first call
    done = warmup.build_middleware_stacks(Wrapper(Wrapper(app)))
    assert app.middleware_stack is not None
    assert done == ["built the middleware stack of Starlette"]


def test_leaves_an_agents_own_middleware_to_the_first_request() -> None:
    app = Starlette(middleware=[Middleware(AgentsOwnMiddleware)])
    before = AgentsOwnMiddleware.constructed
    assert warmup.build_middleware_stacks(app) == []
    assert app.middleware_stack is None
    assert AgentsOwnMiddleware.constructed == before


def test_an_app_already_built_or_not_starlette_is_left_alone() -> None:
    app = Starlette()
    app.middleware_stack = stack = app.build_middleware_stack()
    assert warmup.build_middleware_stacks(Wrapper(app)) == []
    assert app.middleware_stack is stack
    assert warmup.build_middleware_stacks(None) == []
    assert warmup.build_middleware_stacks(object()) == []


PROBE = """
import json, os, sys, threading
sys.path.insert(0, {folder!r})
{imports}
import warmup
fds = sorted(os.listdir("/proc/self/fd"))
class Config:
    loaded_app = None
    def get_loop_factory(self):
        import uvicorn.loops.auto
done = warmup.warm({config})
print(json.dumps({{
    "done": done,
    "anyio_backend": "anyio._backends._asyncio" in sys.modules,
    "anyio": "anyio" in sys.modules,
    "threads": len(os.listdir("/proc/self/task")),
    "python_threads": threading.active_count(),
    "fds_same": sorted(os.listdir("/proc/self/fd")) == fds,
    "loop_set": __import__("asyncio").events._get_running_loop() is not None,
}}))
"""


def _probe(imports: str, config: str = "Config()") -> dict[str, Any]:
    """The warm-up in a fresh interpreter (as the template runs it: a plain module loaded by path)."""
    code = PROBE.format(folder=str(WARMUP.parent), imports=imports, config=config)
    result = subprocess.run([sys.executable, "-I", "-c", code], capture_output=True, text=True, timeout=60, check=True)
    return dict(json.loads(result.stdout))


def test_imports_anyios_first_use_modules_when_the_agent_uses_anyio() -> None:
    found = _probe("import anyio, starlette, uvicorn")
    assert found["anyio_backend"]
    assert "imported anyio._backends._asyncio" in found["done"]
    assert (found["threads"], found["python_threads"], found["fds_same"], found["loop_set"]) == (1, 1, True, False)


def test_imports_nothing_for_packages_the_agent_did_not_import() -> None:
    found = _probe("import json", config="None")  # no uvicorn config either: nothing to warm
    assert found["done"] == []
    assert not found["anyio"]
    assert (found["threads"], found["fds_same"]) == (1, True)


SERVE = """
import os, signal, sys, threading, time, urllib.request
sys.path.insert(0, {folder!r})
import uvicorn
import warmup
warmup.IDLE_TICK_S = 3600.0  # only the exit signal can end the wait: a lost wake-up hangs (the caller's timeout)
print(warmup.quiet_idle_ticks(), flush=True)

async def app(scope, receive, send):
    if scope["type"] == "http":
        await send({{"type": "http.response.start", "status": 200, "headers": []}})
        await send({{"type": "http.response.body", "body": b"ok"}})

server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=0, lifespan="off", log_level="error"))

def client():
    while not server.started:
        time.sleep(0.01)
    port = server.servers[0].sockets[0].getsockname()[1]
    with urllib.request.urlopen(f"http://127.0.0.1:{{port}}/") as answer:
        print("date" if answer.headers.get("date") else "no date", answer.read().decode(), flush=True)
    os.kill(os.getpid(), signal.SIGTERM)

threading.Thread(target=client, daemon=True).start()
try:
    server.run()
except SystemExit:
    pass
print("exited", flush=True)
"""


def test_quiet_ticks_still_date_the_answers_and_exit_on_the_signal() -> None:
    """A forked agent's uvicorn ticks once a second; the exit signal must still end its wait at once."""
    code = SERVE.format(folder=str(WARMUP.parent))
    result = subprocess.run([sys.executable, "-I", "-c", code], capture_output=True, text=True, timeout=60)
    lines = result.stdout.split("\n")
    assert lines[0] == "['uvicorn ticks once a second with connections, never without']", result.stderr
    assert lines[1] == "date ok"
    assert "exited" in lines or result.returncode == -15, result.stderr  # uvicorn re-raises the captured signal


IDLE = """
import asyncio, email.utils, os, signal, sys, threading, time, urllib.request
sys.path.insert(0, {folder!r})
import uvicorn
import warmup
warmup.IDLE_TICK_S = 0.01
warmup.quiet_idle_ticks()

async def app(scope, receive, send):
    if scope["type"] == "http":
        await send({{"type": "http.response.start", "status": 200, "headers": []}})
        await send({{"type": "http.response.body", "body": b"ok"}})

server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=0, lifespan="off", log_level="error"))
ticks = []
on_tick = server.on_tick

async def counted(counter):
    ticks.append(counter)
    return await on_tick(counter)

server.on_tick = counted

def client():
    while not server.started:
        time.sleep(0.01)
    port = server.servers[0].sockets[0].getsockname()[1]
    idle = len(ticks)
    time.sleep(1.5)  # 150 ticks' worth with a connection open
    print("idle ticks", len(ticks) - idle, flush=True)
    asked = int(time.time())
    with urllib.request.urlopen(f"http://127.0.0.1:{{port}}/") as answer:
        dated = int(email.utils.parsedate_to_datetime(answer.headers["date"]).timestamp())
        verdict = "dated now" if dated >= asked else f"stale date {{dated}} < {{asked}}"
        print(verdict, answer.read().decode(), flush=True)
    os.kill(os.getpid(), signal.SIGTERM)

threading.Thread(target=client, daemon=True).start()
try:
    server.run()
except SystemExit:
    pass
print("exited", flush=True)
"""


def test_without_connections_uvicorn_does_not_tick_and_a_connection_dates_its_answer() -> None:
    """An idle fork must not wake at all; the first answer after the quiet spell carries the current date."""
    code = IDLE.format(folder=str(WARMUP.parent))
    result = subprocess.run([sys.executable, "-I", "-c", code], capture_output=True, text=True, timeout=60)
    lines = result.stdout.split("\n")
    assert lines[0] == "idle ticks 0", result.stderr
    assert lines[1] == "dated now ok", result.stderr
    assert "exited" in lines or result.returncode == -15, result.stderr


FILL = """
import gc, sys
sys.path.insert(0, {folder!r})
import warmup
gc.collect()
before = warmup._c_stderr_of(sys._debugmallocstats)
filled = warmup.fill_free_blocks()
free = lambda report: sum(int(f[4]) for f in (line.split() for line in report.splitlines())
                          if len(f) == 5 and all(x.isdigit() for x in f) and int(f[1]) >= 64)
print(filled, len(warmup._FILLER), free(before), flush=True)
"""


def test_the_template_fills_its_free_allocator_slots_before_the_fork() -> None:
    """CPython reports free blocks in partly used pools; each class from a bytes object's size up gets filled."""
    code = FILL.format(folder=str(WARMUP.parent))
    result = subprocess.run([sys.executable, "-I", "-c", code], capture_output=True, text=True, timeout=60)
    filled, kept, free_before = (int(field) for field in result.stdout.split())
    assert filled > 0 and kept == filled, result.stderr
    assert filled >= free_before  # every free block of the classes it can fill (64 bytes and up here) was taken
