"""Agents run the plain way, outside Hangar: the floors every Hangar number is compared with."""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import httpx

from bench.hangar_instance import free_port

ROOT = Path(__file__).resolve().parents[1]
CACHE = ROOT / "bench" / ".cache"
DEBIAN_PYTHON = "/usr/bin/python3.11"


def agent_env(name: str, requirements: list[str]) -> Path:
    """A virtualenv (built with uv, cached) holding ``requirements``, the SDK's dependencies and ``hangar.sdk``.

    Built on the interpreter Hangar builds runtime environments on (Debian's python3.11 where present), so the
    plain process and the sandboxed agent run the same Python.
    """
    digest = hashlib.sha256("\0".join(requirements).encode())
    for path in sorted((ROOT / "src" / "hangar" / "sdk").rglob("*.py")):
        digest.update(path.read_bytes())
    env = CACHE / f"env-{name}-{digest.hexdigest()[:12]}"  # rebuilt when the SDK or the requirements change
    marker = env / ".ready"
    if marker.exists():
        return env
    uv = [sys.executable, "-m", "uv"]
    python = DEBIAN_PYTHON if Path(DEBIAN_PYTHON).exists() else sys.executable
    subprocess.run([*uv, "venv", "--quiet", "--python", python, str(env)], check=True)
    subprocess.run(
        [
            *uv,
            "pip",
            "install",
            "--quiet",
            "--compile-bytecode",  # as Hangar's builder does: no contestant pays for compiling at start
            "--python",
            str(env / "bin" / "python"),
            "starlette",
            "uvicorn",
            "websockets",
            *requirements,
        ],
        check=True,
    )
    site = next((env / "lib").glob("python3*/site-packages"))
    (site / "hangar").mkdir(exist_ok=True)
    (site / "hangar" / "__init__.py").write_text("")  # only the SDK, as the artifact builder installs it
    shutil.copytree(ROOT / "src" / "hangar" / "sdk", site / "hangar" / "sdk", dirs_exist_ok=True)
    subprocess.run([str(env / "bin" / "python"), "-m", "compileall", "-q", str(site / "hangar")], check=True)
    marker.touch()
    return env


@dataclass
class DirectAgent:
    """``python main.py`` of an agent folder on a free port, with the environment's own ``hangar.sdk``."""

    folder: Path
    python: Path
    port: int = 0
    process: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 120) -> float:
        """Start the agent; returns seconds from spawn until ``/ping`` answers."""
        return self._spawn_until(lambda client: client.get(f"{self.url}/ping"), timeout, "did not answer /ping")

    def cold_first_answer(self, payload: bytes, timeout: float = 120) -> float:
        """Seconds from spawn until the first successful /invocations answer (the plain cold start)."""
        return self._spawn_until(
            lambda client: client.post(f"{self.url}/invocations", content=payload), timeout, "never answered"
        )

    def _spawn_until(self, probe: Callable[[httpx.Client], httpx.Response], timeout: float, failure: str) -> float:
        """Spawn ``python main.py`` and poll ``probe`` until it answers 200; seconds from spawn to that answer."""
        self.port = self.port or free_port()
        started = time.perf_counter()
        self.process = subprocess.Popen(
            [str(self.python), "main.py"],
            cwd=self.folder,
            env={**os.environ, "PORT": str(self.port)},
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        with httpx.Client(timeout=5) as client:
            deadline = started + timeout
            while time.perf_counter() < deadline:
                try:
                    if probe(client).status_code == 200:
                        return time.perf_counter() - started
                except httpx.HTTPError:
                    time.sleep(0.002)
        raise RuntimeError(f"{self.folder.name} {failure}")

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
        self.process = None
        self.port = 0
