"""Shared pieces of the control-plane tests: artifacts, polling with a deadline, raw signed requests."""

from __future__ import annotations

import shutil
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials

from tests.support.server import HangarServer, read_admin_key

ROLE = "arn:aws:iam::123456789012:role/HangarAgentRole"
ECHO_DIR = Path(__file__).resolve().parents[2] / "examples" / "echo"
BUCKET = "agents"
SETTLED = {"READY", "CREATE_FAILED", "UPDATE_FAILED", "DELETE_FAILED"}


def seed_echo(data_dir: Path, key: str = "echo") -> None:
    """Put examples/echo in the local artifact store as a folder of objects: s3://agents/echo/."""
    target = data_dir / "artifacts" / BUCKET / key
    target.parent.mkdir(parents=True, exist_ok=True)
    shutil.copytree(ECHO_DIR, target, ignore=shutil.ignore_patterns("__pycache__"))


def code_artifact(prefix: str = "echo/") -> dict[str, Any]:
    return {
        "codeConfiguration": {
            "code": {"s3": {"bucket": BUCKET, "prefix": prefix}},
            "runtime": "PYTHON_3_11",
            "entryPoint": ["main.py"],
        }
    }


# Hangar's own registry (no network): a repository nobody created, so preparing the version fails fast and clearly.
MISSING_IMAGE = "123456789012.dkr.ecr.us-west-2.amazonaws.com/team/agent:1.0"


def container_artifact(uri: str = MISSING_IMAGE) -> dict[str, Any]:
    return {"containerConfiguration": {"containerUri": uri}}


def unique_name(prefix: str = "agent") -> str:
    return f"{prefix}_{uuid.uuid4().hex[:8]}"


def wait_until(
    fetch: Callable[[], dict[str, Any]], done: Callable[[dict[str, Any]], bool], timeout: float = 180.0
) -> dict[str, Any]:
    """Poll ``fetch`` until ``done`` holds (bounded); returns the last answer."""
    deadline = time.monotonic() + timeout
    last: dict[str, Any] = {}
    while time.monotonic() < deadline:
        last = fetch()
        if done(last):
            return last
        time.sleep(0.1)
    raise AssertionError(f"not done after {timeout}s; last answer: {last}")


def wait_settled(fetch: Callable[[], dict[str, Any]], timeout: float = 180.0) -> dict[str, Any]:
    return wait_until(fetch, lambda doc: doc["status"] in SETTLED, timeout)


def signed(
    server: HangarServer,
    method: str,
    path: str,
    body: bytes = b"",
    headers: dict[str, str] | None = None,
    query: str = "",
    http: httpx.Client | None = None,
) -> httpx.Response:
    """A request signed with SigV4 exactly as sent (for bodies and paths boto3 would never produce)."""
    key_id, secret = read_admin_key(server.credentials_file)
    url = f"{server.url}{path}" + (f"?{query}" if query else "")
    request = AWSRequest(method=method, url=url, data=body, headers=dict(headers or {}))
    SigV4Auth(Credentials(key_id, secret), "bedrock-agentcore", "us-west-2").add_auth(request)
    sender = http or httpx
    return sender.request(method, url, content=body, headers=dict(request.headers.items()), timeout=30)
