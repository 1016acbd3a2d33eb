"""The real aws CLI v1 (its own, older vendored botocore model) against a real ``hangar serve``."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

from tests.control.support import ROLE, code_artifact, unique_name, wait_settled, wait_until
from tests.support.server import HangarServer

AWS = Path(sys.executable).parent / "aws"
NETWORK = json.dumps({"networkMode": "PUBLIC"})


def aws(server: HangarServer, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    env.update(
        AWS_SHARED_CREDENTIALS_FILE=str(server.credentials_file),
        AWS_CONFIG_FILE=os.devnull,
        AWS_EC2_METADATA_DISABLED="true",
    )
    command = [str(AWS), "bedrock-agentcore-control", *args, "--endpoint-url", server.url, "--region", "us-west-2"]
    return subprocess.run(command, capture_output=True, text=True, env=env, timeout=120)


def ok(result: subprocess.CompletedProcess[str]) -> dict[str, Any]:
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout) if result.stdout.strip() else {}


def test_create_list_get_update_delete(server: HangarServer, client: Any) -> None:
    name = unique_name("cli")
    created = ok(
        aws(
            server,
            "create-agent-runtime",
            "--agent-runtime-name",
            name,
            "--agent-runtime-artifact",
            json.dumps(code_artifact()),
            "--role-arn",
            ROLE,
            "--network-configuration",
            NETWORK,
        )
    )
    runtime_id = created["agentRuntimeId"]
    assert created["status"] == "CREATING" and created["agentRuntimeVersion"] == "1"
    assert created["createdAt"].endswith("+00:00")  # the CLI prints the wire value verbatim

    wait_settled(lambda: client.get_agent_runtime(agentRuntimeId=runtime_id))  # boto3 polls: the CLI starts slowly
    ready = ok(aws(server, "get-agent-runtime", "--agent-runtime-id", runtime_id))
    assert ready["status"] == "READY", ready.get("failureReason")
    listed = ok(aws(server, "list-agent-runtimes"))["agentRuntimes"]
    assert [r["agentRuntimeName"] for r in listed if r["agentRuntimeId"] == runtime_id] == [name]

    updated = ok(
        aws(
            server,
            "update-agent-runtime",
            "--agent-runtime-id",
            runtime_id,
            "--agent-runtime-artifact",
            json.dumps(code_artifact()),
            "--role-arn",
            ROLE,
            "--network-configuration",
            NETWORK,
            "--environment-variables",
            "MODE=cli",
        )
    )
    assert updated["status"] == "UPDATING" and updated["agentRuntimeVersion"] == "2"
    wait_settled(lambda: client.get_agent_runtime(agentRuntimeId=runtime_id))
    again = ok(aws(server, "get-agent-runtime", "--agent-runtime-id", runtime_id))
    assert again["status"] == "READY" and again["environmentVariables"] == {"MODE": "cli"}
    versions = ok(aws(server, "list-agent-runtime-versions", "--agent-runtime-id", runtime_id))["agentRuntimes"]
    assert [v["agentRuntimeVersion"] for v in versions] == ["1", "2"]

    deleted = ok(aws(server, "delete-agent-runtime", "--agent-runtime-id", runtime_id))
    assert deleted["status"] == "DELETING"
    wait_until(
        lambda: {"ids": [r["agentRuntimeId"] for r in client.list_agent_runtimes()["agentRuntimes"]]},
        lambda page: runtime_id not in page["ids"],
    )
    missing = aws(server, "get-agent-runtime", "--agent-runtime-id", runtime_id)
    assert missing.returncode == 255 and "ResourceNotFoundException" in missing.stderr


def test_hyphenated_name_is_refused(server: HangarServer) -> None:
    result = aws(
        server,
        "create-agent-runtime",
        "--agent-runtime-name",
        "my-agent",
        "--agent-runtime-artifact",
        json.dumps(code_artifact()),
        "--role-arn",
        ROLE,
        "--network-configuration",
        NETWORK,
    )
    assert result.returncode == 255
    assert "ValidationException" in result.stderr and "CreateAgentRuntime" in result.stderr
    assert "[a-zA-Z][a-zA-Z0-9_]{0,47}" in result.stderr
    assert "hyphens and other characters are not allowed" in result.stderr
