"""Real uvicorn servers on loopback for SDK tests: in-process (a thread) for apps, a subprocess for examples."""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import uvicorn

from tests.support.server import free_port

START_TIMEOUT = 30.0
REPO = Path(__file__).resolve().parents[2]


def wait_for_ping(url: str, alive: Any = None, timeout: float = START_TIMEOUT) -> None:
    """Poll ``GET /ping`` until it answers 200; ``alive()`` returning False aborts early."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if alive is not None and not alive():
            raise RuntimeError(f"server at {url} died while starting")
        try:
            if httpx.get(f"{url}/ping", timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.05)
    raise RuntimeError(f"server at {url} did not answer /ping within {timeout}s")


@dataclass
class ThreadServer:
    """An ASGI app served by uvicorn in a background thread of the test process."""

    app: Any
    port: int = field(default_factory=free_port)
    server: uvicorn.Server | None = None
    thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def ws_url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/ws"

    def start(self) -> ThreadServer:
        config = uvicorn.Config(self.app, host="127.0.0.1", port=self.port, log_level="warning")
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, name=f"uvicorn-{self.port}", daemon=True)
        self.thread.start()
        wait_for_ping(self.url, alive=self.thread.is_alive)
        return self

    def stop(self) -> None:
        if self.server is not None and self.thread is not None:
            self.server.should_exit = True
            self.thread.join(timeout=10)


@dataclass
class ExampleProcess:
    """``python examples/<name>/main.py`` run as a user would, listening on ``$PORT``."""

    name: str
    port: int = field(default_factory=free_port)
    process: subprocess.Popen[bytes] | None = None
    log: Any = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def ws_url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/ws"

    def output(self) -> str:
        if self.log is None:
            return ""
        self.log.seek(0)
        return self.log.read().decode("utf-8", "replace")

    def start(self) -> ExampleProcess:
        script = REPO / "examples" / self.name / "main.py"
        env = {**os.environ, "PORT": str(self.port)}
        self.log = tempfile.TemporaryFile()  # noqa: SIM115 - the child writes to it until stop()
        self.process = subprocess.Popen(
            [sys.executable, str(script)], cwd=script.parent, env=env, stdout=self.log, stderr=subprocess.STDOUT
        )
        wait_for_ping(self.url, alive=lambda: self.process is not None and self.process.poll() is None)
        return self

    def stop(self) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        self.process.terminate()
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(timeout=10)
        if self.log is not None:
            self.log.close()
