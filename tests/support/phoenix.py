"""Arize Phoenix as a real OTLP receiver from PyPI, in its own venv, for tests.

Our own receiver (``tests/support/otlp.py``) is fast but is our code. Phoenix is a maintained OpenTelemetry
backend: ``phoenix serve`` accepts OTLP/HTTP (protobuf, gzip) at ``/v1/traces``, stores the spans in SQLite and
answers ``GET /v1/projects/{project}/spans`` with them, so a test can read back what it stored. It is installed
into ``.venv-otlp/`` (gitignored) by ``make test-deps`` (``python -m tests.support.phoenix install``), never into
Hangar's venv: its many pins must not move Hangar's.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx

from tests.support.server import end_process, free_port, wait_serving

PHOENIX_PIN = "arize-phoenix==20.26.1"
VENV = Path(os.environ.get("HANGAR_TEST_PHOENIX_VENV", Path(__file__).resolve().parents[2] / ".venv-otlp"))
PHOENIX_BIN = VENV / "bin" / "phoenix"
STAMP = VENV / ".hangar-pin"


def installed() -> bool:
    """The venv holds the pinned Phoenix (the stamp is written only after a complete install)."""
    return PHOENIX_BIN.exists() and STAMP.exists() and STAMP.read_text().strip() == PHOENIX_PIN


def install() -> None:
    """Create ``.venv-otlp`` with the pinned Phoenix (a no-op when it is there): with uv (a Hangar dependency,
    so in Hangar's venv) when found, as it installs Phoenix's ~150 packages in seconds; else with pip."""
    if installed():
        return
    uv = shutil.which("uv", path=str(Path(sys.executable).parent)) or shutil.which("uv")
    if uv:
        subprocess.run([uv, "venv", "--quiet", "--allow-existing", "--python", sys.executable, str(VENV)], check=True)
        python = str(VENV / "bin" / "python")
        subprocess.run(
            [uv, "pip", "install", "--quiet", "--compile-bytecode", "--python", python, PHOENIX_PIN], check=True
        )
    else:
        subprocess.run([sys.executable, "-m", "venv", str(VENV)], check=True)
        pip = [str(VENV / "bin" / "python"), "-m", "pip", "install", "--quiet", "--disable-pip-version-check"]
        subprocess.run([*pip, PHOENIX_PIN], check=True)
    STAMP.write_text(PHOENIX_PIN + "\n")


@dataclass(frozen=True)
class StoredSpan:
    """A span as Phoenix stored it (Phoenix keeps no OTel span kind: its ``span_kind`` is OpenInference's)."""

    name: str
    trace_id: str  # 32 hex
    span_id: str  # 16 hex
    parent_id: str  # 16 hex, "" for a root
    attributes: dict[str, Any]
    status: str  # OK, ERROR, UNSET
    start: datetime
    end: datetime


def _flatten(value: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """Phoenix may answer attributes nested by their dots; tests compare them by their dotted OTel names."""
    flat: dict[str, Any] = {}
    for key, item in value.items():
        name = f"{prefix}{key}"
        if isinstance(item, dict):
            flat.update(_flatten(item, f"{name}."))
        else:
            flat[name] = item
    return flat


def _parse(span: dict[str, Any]) -> StoredSpan:
    return StoredSpan(
        name=span["name"],
        trace_id=span["context"]["trace_id"],
        span_id=span["context"]["span_id"],
        parent_id=span.get("parent_id") or "",
        attributes=_flatten(span.get("attributes") or {}),
        status=span.get("status_code") or "UNSET",
        start=datetime.fromisoformat(span["start_time"]),
        end=datetime.fromisoformat(span["end_time"]),
    )


class Phoenix:
    """``with Phoenix() as phoenix``: a ``phoenix serve`` on loopback ports of its own, its data in a temp dir."""

    def __init__(self, project: str = "default") -> None:
        self.project = project
        self.port = free_port()
        self.grpc_port = free_port()
        self._dir: Path | None = None
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def endpoint(self) -> str:
        """The OTLP/HTTP base URL (exporters post to ``<it>/v1/traces``)."""
        return self.url

    def __enter__(self) -> Phoenix:
        """Start ``phoenix serve`` without waiting (its imports take a while): call ``ready()`` before use."""
        self._dir = Path(tempfile.mkdtemp(prefix="hangar-phoenix-"))
        env = {
            **os.environ,
            "PHOENIX_WORKING_DIR": str(self._dir),
            "PHOENIX_HOST": "127.0.0.1",
            "PHOENIX_PORT": str(self.port),
            "PHOENIX_GRPC_PORT": str(self.grpc_port),
            "PHOENIX_TELEMETRY_ENABLED": "false",
        }
        env.pop("VIRTUAL_ENV", None)
        log = open(self._dir / "phoenix.log", "ab")  # handed to the child process
        self._process = subprocess.Popen(
            [str(PHOENIX_BIN), "serve"], stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True
        )
        return self

    def ready(self, timeout: float = 300.0) -> Phoenix:
        """Wait until Phoenix answers its health check (a loaded 2-core host: up to minutes for its imports)."""
        assert self._process is not None
        wait_serving(
            self._process, f"{self.url}/healthz", "phoenix serve", self.log, timeout, interval=0.2, request_timeout=2
        )
        return self

    def log(self) -> str:
        path = self._dir / "phoenix.log" if self._dir else None
        return path.read_text(errors="replace")[-4000:] if path and path.exists() else ""

    def __exit__(self, *exc: object) -> None:
        end_process(self._process)
        if self._dir is not None:
            shutil.rmtree(self._dir, ignore_errors=True)

    def spans(self) -> list[StoredSpan]:
        """Every span stored in the project, read back page by page through Phoenix's REST API."""
        found: list[StoredSpan] = []
        cursor: str | None = None
        with httpx.Client(base_url=self.url, timeout=30) as http:
            while True:
                params: dict[str, Any] = {"limit": 1000, **({"cursor": cursor} if cursor else {})}
                answer = http.get(f"/v1/projects/{self.project}/spans", params=params)
                if answer.status_code == 404:  # the project appears with its first span
                    return found
                answer.raise_for_status()
                body = answer.json()
                found.extend(_parse(span) for span in body["data"])
                cursor = body.get("next_cursor")
                if not cursor:
                    return found

    def trace(self, trace_id: str) -> list[StoredSpan]:
        return [span for span in self.spans() if span.trace_id == trace_id]


if __name__ == "__main__":
    if sys.argv[1:] != ["install"]:
        raise SystemExit("usage: python -m tests.support.phoenix install")
    install()
