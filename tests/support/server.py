"""Start a real ``hangar serve`` process on loopback for end-to-end tests."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Container
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

HANGAR_BIN = Path(sys.executable).parent / "hangar"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_serving(
    process: subprocess.Popen[Any] | None,
    url: str,
    what: str,
    log: Callable[[], str],
    timeout: float,
    *,
    ok: Container[int] = (200,),
    interval: float = 0.05,
    request_timeout: float = 1.0,
) -> None:
    """Poll ``url`` until it answers a status in ``ok``. A ``process`` that exits first fails at once with its log,
    rather than after the whole (generous) timeout; so does one that never answers, when the timeout is up."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process is not None and process.poll() is not None:
            raise RuntimeError(f"{what} exited early:\n{log()}")
        try:
            if httpx.get(url, timeout=request_timeout).status_code in ok:
                return
        except httpx.HTTPError:
            pass
        time.sleep(interval)
    raise RuntimeError(f"{what} did not answer {url} in {timeout}s:\n{log()}")


def end_process(process: subprocess.Popen[Any] | None, sig: int = signal.SIGTERM, timeout: float = 30.0) -> int | None:
    """Send ``sig`` to a child still running and reap it; one that outlives ``timeout`` is killed (and reaped, so
    no zombie outlives the test). Returns its exit status (None: there was no process)."""
    if process is None:
        return None
    if process.poll() is None:
        process.send_signal(sig)
        try:
            process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
    return process.returncode


@dataclass
class HangarServer:
    """One running server; ``boto3_client(service)`` gives a client signed with its admin key."""

    data_dir: Path
    port: int = field(default_factory=free_port)
    env: dict[str, str] = field(default_factory=dict)
    extra_args: list[str] = field(default_factory=list)
    process: subprocess.Popen[bytes] | None = None
    log_path: Path | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def credentials_file(self) -> Path:
        return self.data_dir / "credentials"

    def start(self, timeout: float = 60.0) -> HangarServer:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.log_path = self.data_dir / f"server-{self.port}.log"
        env = {**os.environ, **self.env}
        cmd = [
            str(HANGAR_BIN),
            "serve",
            "--host",
            "127.0.0.1",
            "--port",
            str(self.port),
            "--data-dir",
            str(self.data_dir),
            *self.extra_args,
        ]
        log = open(self.log_path, "ab")  # noqa: SIM115 - handed to the child process
        self.process = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True)
        wait_serving(self.process, f"{self.url}/healthz", "hangar serve", self.log, timeout)
        return self

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path and self.log_path.exists() else ""

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 30.0) -> None:
        end_process(self.process, sig, timeout)

    def kill(self) -> None:
        """SIGKILL, as a crash would."""
        self.stop(signal.SIGKILL)

    def boto3_client(self, service: str, **config: object):  # type: ignore[no-untyped-def]
        import boto3
        from botocore.config import Config

        os.environ.setdefault("AWS_EC2_METADATA_DISABLED", "true")
        key_id, secret = read_admin_key(self.credentials_file)
        return boto3.client(
            service,
            endpoint_url=self.url,
            region_name="us-west-2",
            aws_access_key_id=key_id,
            aws_secret_access_key=secret,
            config=Config(retries={"max_attempts": 1, "mode": "standard"}, **config),
        )


def read_admin_key(path: Path) -> tuple[str, str]:
    import configparser

    parser = configparser.ConfigParser()
    parser.read(path)
    return parser["default"]["aws_access_key_id"], parser["default"]["aws_secret_access_key"]
