"""sandbox/warmup.quick_idle_shutdown: a fork's uvicorn exits without its fixed 0.1 s sleep when nothing is in flight,
and keeps uvicorn's own graceful shutdown when a request is.

A real uvicorn in a subprocess; the sleeps uvicorn's server module asks for once the exit signal came are recorded
(its module's ``asyncio`` replaced by a recording copy), so the test says which path ran without timing anything.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from hangar.sandbox import warmup

WARMUP = Path(warmup.__file__)

SERVE = """
import asyncio, http.client, os, signal, sys, threading, types
sys.path.insert(0, {folder!r})
import uvicorn, uvicorn.server
import warmup
print(warmup.quick_idle_shutdown(), flush=True)
BUSY = {busy!r}
in_flight = threading.Event()
real_sleep = asyncio.sleep
sleeps = []

async def recorded(delay, *args):
    if server.should_exit:
        sleeps.append(delay)
    return await real_sleep(delay, *args)

uvicorn.server.asyncio = types.SimpleNamespace(**{{**vars(asyncio), "sleep": recorded}})

async def app(scope, receive, send):
    if scope["type"] == "lifespan":
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({{"type": "lifespan.startup.complete"}})
            else:
                print("lifespan shutdown", flush=True)
                await send({{"type": "lifespan.shutdown.complete"}})
                return
    if scope["path"] == "/slow":
        in_flight.set()
        while server.servers[0].is_serving():  # answers only once the shutdown has begun: in flight across it
            await real_sleep(0.01)
    await send({{"type": "http.response.start", "status": 200, "headers": []}})
    await send({{"type": "http.response.body", "body": b"ok"}})

server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=0, lifespan="on", log_level="error"))

def client():
    while not server.started:
        threading.Event().wait(0.01)
    port = server.servers[0].sockets[0].getsockname()[1]
    keep = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    keep.request("GET", "/")
    print("idle", keep.getresponse().read().decode(), flush=True)  # left open: an idle keep-alive connection
    if BUSY:
        busy = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        busy.request("GET", "/slow")
        in_flight.wait()
    os.kill(os.getpid(), signal.SIGTERM)
    if BUSY:
        print("in flight", busy.getresponse().read().decode(), flush=True)

signal.signal(signal.SIGTERM, lambda *_: None)  # what uvicorn re-raises after its shutdown: the report follows
thread = threading.Thread(target=client)
thread.start()
try:
    server.run()
except SystemExit:
    pass
finally:
    thread.join()
    print("shutdown sleeps", sleeps, flush=True)
"""


def _serve(busy: bool) -> list[str]:
    code = SERVE.format(folder=str(WARMUP.parent), busy=busy)
    result = subprocess.run([sys.executable, "-I", "-c", code], capture_output=True, text=True, timeout=60, check=False)
    lines = result.stdout.splitlines()
    assert lines and lines[0] == "['uvicorn exits without its 0.1 s shutdown sleep when no request is in flight']", (
        result.stdout + result.stderr
    )
    return lines


def test_without_a_request_in_flight_uvicorn_exits_without_its_sleep() -> None:
    """An idle keep-alive connection is closed and the app's lifespan shutdown still runs, without the 0.1 s."""
    lines = _serve(busy=False)
    assert "idle ok" in lines
    assert "lifespan shutdown" in lines, lines
    assert lines[-1] == "shutdown sleeps []", lines


def test_a_request_in_flight_gets_uvicorns_own_graceful_shutdown() -> None:
    """The request that began before the signal is answered in full: uvicorn's shutdown ran, its sleep included."""
    lines = _serve(busy=True)
    assert "in flight ok" in lines, lines
    assert "lifespan shutdown" in lines, lines
    assert lines[-1].startswith("shutdown sleeps [0.1"), lines
