"""The operator view of nodes without ``--cluster``: one process is node "local" (``GET /hangar/nodes/``, ``hangar
nodes list``), every session entry names it, and draining is refused (there is nothing to drain to)."""

from __future__ import annotations

import json
import os
import subprocess
import uuid
from pathlib import Path

from tests.support.server import HANGAR_BIN, HangarServer

AGENT = """\
from hangar.sdk import BedrockAgentCoreApp

app = BedrockAgentCoreApp()


@app.entrypoint
def invoke(payload):
    return {"ok": True}


if __name__ == "__main__":
    app.run()
"""


def cli(server: HangarServer, *args: str) -> subprocess.CompletedProcess[str]:
    env = {key: value for key, value in os.environ.items() if not key.startswith(("AWS_", "HANGAR_"))}
    env.update(HANGAR_ENDPOINT_URL=server.url, HANGAR_DATA_DIR=str(server.data_dir), COLUMNS="200")
    return subprocess.run([str(HANGAR_BIN), *args], env=env, capture_output=True, text=True, timeout=300)


def test_one_process_is_node_local(hangar: HangarServer, tmp_path: Path) -> None:
    listed = cli(hangar, "nodes", "list", "-o", "json")
    assert listed.returncode == 0, listed.stderr
    [node] = json.loads(listed.stdout)
    assert node["name"] == "local" and node["healthy"] and not node["draining"]
    assert node["capacity"] > 0 and node["address"].startswith("http")
    assert cli(hangar, "nodes", "list", "-q").stdout.split() == ["local"]
    assert "local" in cli(hangar, "nodes", "list").stdout

    (tmp_path / "main.py").write_text(AGENT)
    deployed = json.loads(cli(hangar, "deploy", str(tmp_path), "--name", "local_node_agent", "--json").stdout)
    session_id = f"local-node-{uuid.uuid4()}"
    data = hangar.boto3_client("bedrock-agentcore", read_timeout=120)
    data.invoke_agent_runtime(agentRuntimeArn=deployed["agentRuntimeArn"], runtimeSessionId=session_id, payload=b"{}")
    sessions = json.loads(cli(hangar, "sessions", "list", "-o", "json").stdout)
    assert [s["node"] for s in sessions if s["runtimeSessionId"] == session_id] == ["local"]
    assert json.loads(cli(hangar, "nodes", "list", "-o", "json").stdout)[0]["sessions"] >= 1

    refused = cli(hangar, "nodes", "drain", "local")
    assert refused.returncode == 1, (refused.stdout, refused.stderr)
    assert "no --cluster" in refused.stdout + refused.stderr
