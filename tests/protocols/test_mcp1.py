"""MCP major 1, what most users run today: the 1.x client against a FastMCP 1.x server (``examples/mcp_server``
with ``mcp<2`` in its requirements), stateful, through Hangar: sticky session, progress, a clean closing DELETE."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import tempfile
from pathlib import Path
from typing import Any

import pytest

from tests.dataplane.support import BUCKET, deploy, sessions
from tests.protocols.support import admin_key, invocations_url
from tests.support.agent_env import EXAMPLES, PYTHON, UV
from tests.support.server import HangarServer

CLIENT_REQUIREMENTS = ("mcp>=1.25,<2", "botocore>=1.35,<2", "httpx>=0.27,<1")
SCRIPT = Path(__file__).with_name("mcp1_client.py")


def mcp1_env() -> Path:
    """A venv with the 1.x client, shared across runs (built once, atomically, under the temp dir)."""
    digest = hashlib.sha256("\n".join(CLIENT_REQUIREMENTS).encode()).hexdigest()[:16]
    final = Path(tempfile.gettempdir()) / f"hangar-test-mcp1-env-{digest}"
    if (final / "bin" / "python").exists():
        return final
    building = Path(tempfile.mkdtemp(prefix="hangar-test-mcp1-env-build-"))
    shutil.rmtree(building)
    subprocess.run([str(UV), "venv", "--quiet", "--python", PYTHON, str(building)], check=True, timeout=300)
    subprocess.run(
        [str(UV), "pip", "install", "--quiet", "--python", str(building / "bin" / "python"), *CLIENT_REQUIREMENTS],
        check=True,
        timeout=600,
    )
    try:
        os.rename(building, final)
    except OSError:
        shutil.rmtree(building, ignore_errors=True)
    return final


@pytest.fixture(scope="module")
def fastmcp1(server: HangarServer, control: Any) -> dict[str, Any]:
    """examples/mcp_server with requirements pinned to the 1.x SDK (FastMCP), stateful."""
    target = server.data_dir / "artifacts" / BUCKET / "mcp_server_v1"
    shutil.copytree(EXAMPLES / "mcp_server", target, ignore=shutil.ignore_patterns("__pycache__"), dirs_exist_ok=True)
    (target / "requirements.txt").write_text("mcp>=1.25,<2\n")
    return deploy(
        control,
        "mcp_server_v1",
        protocolConfiguration={"serverProtocol": "MCP"},
        environmentVariables={"MCP_STATEFUL": "1"},
    )


def test_mcp1_client_and_fastmcp1_server_through_hangar(server: HangarServer, fastmcp1: dict[str, Any]) -> None:
    python = mcp1_env() / "bin" / "python"
    key, secret = admin_key(server)
    done = subprocess.run(
        [str(python), str(SCRIPT), invocations_url(server, fastmcp1), key, secret],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert "Session termination failed" not in done.stderr
    found = json.loads(done.stdout)
    assert found["added"] == "42" and found["progress"] == [1.0, 2.0]
    assert found["notes"] == {"result": ["one", "two"]}
    posts = [e for e in found["exchanges"] if e[0] == "POST"]
    assert len({e[2] for e in posts}) == 1  # FastMCP's own session id, all along
    assert [e[1] for e in found["exchanges"] if e[0] == "DELETE"] == [204]
    live = [s for s in sessions(server) if s["runtimeId"] == fastmcp1["agentRuntimeId"] and s["state"] != "Terminated"]
    assert not live
