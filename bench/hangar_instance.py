"""A real `hangar serve` for benchmarks, and the plain AWS calls that deploy and invoke agents on it."""

from __future__ import annotations

import configparser
import contextlib
import functools
import io
import os
import signal
import socket
import subprocess
import sys
import time
import uuid
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import quote

import boto3
import httpx
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.config import Config
from botocore.credentials import Credentials

REGION = "us-west-2"
ROLE_ARN = "arn:aws:iam::123456789012:role/HangarBench"
BUCKET = "hangar-bench"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@dataclass
class HangarInstance:
    data_dir: Path
    extra_args: list[str] = field(default_factory=list)
    env: dict[str, str] = field(default_factory=dict)
    port: int = field(default_factory=free_port)
    process: subprocess.Popen[bytes] | None = None
    _clients: dict[str, object] = field(default_factory=dict)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> HangarInstance:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        log = open(self.data_dir / "server.log", "ab")  # noqa: SIM115 - owned by the child
        hangar = Path(sys.executable).parent / "hangar"
        self.process = subprocess.Popen(
            [str(hangar), "serve", "--port", str(self.port), "--data-dir", str(self.data_dir), *self.extra_args],
            stdout=log,
            stderr=subprocess.STDOUT,
            env={**os.environ, **self.env},
            start_new_session=True,
        )
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"{self.url}/healthz", timeout=1).status_code == 200:
                    return self
            except httpx.HTTPError:
                time.sleep(0.05)
        raise RuntimeError("hangar serve did not start")

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(30)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)

    @functools.cached_property
    def credentials(self) -> Credentials:
        parser = configparser.ConfigParser()
        parser.read(self.data_dir / "credentials")
        section = parser["default"]
        return Credentials(section["aws_access_key_id"], section["aws_secret_access_key"])

    def client(self, service: str):  # type: ignore[no-untyped-def]
        """One boto3 client per service for the whole run (creating one costs tens of milliseconds)."""
        if service not in self._clients:
            self._clients[service] = self._new_client(service)
        return self._clients[service]

    def _new_client(self, service: str):  # type: ignore[no-untyped-def]
        creds = self.credentials
        extra = {"s3": {"addressing_style": "path"}} if service == "s3" else {}
        return boto3.client(
            service,
            endpoint_url=self.url,
            region_name=REGION,
            aws_access_key_id=creds.access_key,
            aws_secret_access_key=creds.secret_key,
            config=Config(retries={"max_attempts": 1}, read_timeout=600, **extra),
        )

    def deploy(self, folder: Path, name: str, timeout: float = 900, **extra: object) -> str:
        """Zip and upload ``folder``, create the runtime, wait for READY; returns the runtime ARN."""
        buffer = io.BytesIO()
        with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
            for path in sorted(folder.rglob("*")):
                if path.is_file() and "__pycache__" not in path.parts:
                    archive.write(path, path.relative_to(folder).as_posix())
        s3 = self.client("s3")
        with contextlib.suppress(s3.exceptions.ClientError):
            s3.create_bucket(Bucket=BUCKET)
        key = f"{name}/{uuid.uuid4().hex}.zip"
        s3.put_object(Bucket=BUCKET, Key=key, Body=buffer.getvalue())
        control = self.client("bedrock-agentcore-control")
        created = control.create_agent_runtime(
            agentRuntimeName=name,
            agentRuntimeArtifact={
                "codeConfiguration": {
                    "code": {"s3": {"bucket": BUCKET, "prefix": key}},
                    "runtime": "PYTHON_3_11",
                    "entryPoint": ["main.py"],
                }
            },
            roleArn=ROLE_ARN,
            networkConfiguration={"networkMode": "PUBLIC"},
            **extra,
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            got = control.get_agent_runtime(agentRuntimeId=created["agentRuntimeId"])
            if got["status"] == "READY":
                return created["agentRuntimeArn"]
            if got["status"].endswith("FAILED"):
                raise RuntimeError(f"deploy of {name} failed: {got.get('failureReason')}")
            time.sleep(0.5)
        raise RuntimeError(f"deploy of {name} not READY after {timeout}s")

    def invoke_url(self, arn: str) -> str:
        return f"{self.url}/runtimes/{quote(arn, safe='')}/invocations?qualifier=DEFAULT"

    def stop_url(self, arn: str) -> str:
        return f"{self.url}/runtimes/{quote(arn, safe='')}/stopruntimesession?qualifier=DEFAULT"

    def stop_session(self, client: httpx.Client, arn: str, session_id: str) -> None:
        """StopRuntimeSession as one signed POST on ``client`` (cheaper for a load generator than a boto3 call)."""
        url, body = self.stop_url(arn), b"{}"
        response = client.post(url, content=body, headers=self.signed_headers(url, body, session_id))
        if response.status_code != 200:
            raise RuntimeError(f"StopRuntimeSession failed: {response.status_code} {response.text[:300]}")

    def signed_headers(self, url: str, body: bytes, session_id: str, content_type: str = "application/json") -> dict:
        """SigV4 headers for one POST, valid for about five minutes (SigV4 has no nonce, so they can be replayed)."""
        request = AWSRequest(
            method="POST",
            url=url,
            data=body,
            headers={"Content-Type": content_type, "X-Amzn-Bedrock-AgentCore-Runtime-Session-Id": session_id},
        )
        SigV4Auth(self.credentials, "bedrock-agentcore", REGION).add_auth(request)
        return dict(request.headers.items())

    def operator(self) -> dict:
        """The operator API's session listing (sessions with ``startKind``, and the warm pool)."""
        url = f"{self.url}/hangar/sessions/"
        request = AWSRequest(method="GET", url=url)
        SigV4Auth(self.credentials, "bedrock-agentcore", REGION).add_auth(request)
        response = httpx.get(url, headers=dict(request.headers.items()), timeout=30)
        response.raise_for_status()
        return response.json()

    def ready_spares(self, arn: str) -> int:
        runtime_id = arn.rsplit("/", 1)[1]
        ready = self.operator()["warmPool"]["ready"]
        return sum(len(ids) for key, ids in ready.items() if key.startswith(f"{runtime_id}/"))

    def start_kind(self, session_id: str) -> str | None:
        for entry in self.operator()["sessions"]:
            if entry["runtimeSessionId"] == session_id:
                return entry.get("startKind")
        return None

    def template_state(self, arn: str) -> dict | None:
        """The operator API's warm template of ``arn``'s served version (``id``, ``alive``, ``forks``), or None."""
        runtime_id = arn.rsplit("/", 1)[1]
        for key, state in self.operator()["templates"]["versions"].items():
            if key.startswith(f"{runtime_id}/") and state.get("template"):
                return state["template"]
        return None

    def wait_template(self, arn: str, timeout: float = 300) -> dict:
        """Wait until ``arn``'s warm template is alive (its agent imported, ready to fork); returns its state."""
        deadline = time.monotonic() + timeout
        while True:
            state = self.template_state(arn)
            if state and state["alive"]:
                return state
            if time.monotonic() > deadline:
                raise RuntimeError(f"the warm template of {arn} is not alive after {timeout}s: {state}")
            time.sleep(0.05)

    def wait_spares(self, arn: str, count: int, timeout: float = 300) -> None:
        deadline = time.monotonic() + timeout
        while self.ready_spares(arn) < count:
            if time.monotonic() > deadline:
                raise RuntimeError(f"the warm pool of {arn} did not reach {count} spares")
            time.sleep(0.05)

    def server_rss_kib(self) -> tuple[int, int]:
        """(VmRSS, VmHWM) of the server process in KiB."""
        values = {}
        with open(f"/proc/{self.process.pid}/status") as status:  # type: ignore[union-attr]
            for line in status:
                if line.startswith(("VmRSS:", "VmHWM:")):
                    key, value = line.split(":", 1)
                    values[key] = int(value.split()[0])
        return values["VmRSS"], values["VmHWM"]

    def reset_peak_rss(self) -> None:
        """Reset VmHWM so the next reading is the peak of what follows (Linux >= 4.0)."""
        with open(f"/proc/{self.process.pid}/clear_refs", "w") as clear:  # type: ignore[union-attr]
            clear.write("5")


def new_session_id() -> str:
    return f"bench-{uuid.uuid4()}"
