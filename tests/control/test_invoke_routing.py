"""Versions and endpoints as the data plane sees them: invocations reach the version their qualifier names."""

from __future__ import annotations

import json
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from botocore.exceptions import ClientError

from tests.control.support import BUCKET, ROLE, code_artifact, unique_name, wait_settled, wait_until
from tests.support.server import HangarServer

AGENT_DIR = Path(__file__).parent / "agents" / "whoami"


@pytest.fixture(scope="module")
def server() -> Iterator[HangarServer]:
    # Sandboxes run as an unprivileged user, which cannot enter pytest's 0700 temp root: use a traversable dir.
    root = Path(tempfile.mkdtemp(prefix="hangar-invoke-"))
    root.chmod(0o755)
    data_dir = root / "data"
    shutil.copytree(AGENT_DIR, data_dir / "artifacts" / BUCKET / "whoami", ignore=shutil.ignore_patterns("__pycache__"))
    hangar = HangarServer(data_dir=data_dir).start()
    yield hangar
    hangar.stop()
    shutil.rmtree(root, ignore_errors=True)


def _label(data_plane: Any, arn: str, qualifier: str | None = None) -> str:
    extra = {"qualifier": qualifier} if qualifier else {}
    answer = data_plane.invoke_agent_runtime(agentRuntimeArn=arn, payload=json.dumps({"q": 1}), **extra)
    return json.loads(answer["response"].read())["label"]


def test_qualifiers_follow_versions_and_rollback(client: Any, server: HangarServer) -> None:
    data_plane = server.boto3_client("bedrock-agentcore")
    artifact = code_artifact("whoami/")
    created = client.create_agent_runtime(
        agentRuntimeName=unique_name("who"),
        agentRuntimeArtifact=artifact,
        roleArn=ROLE,
        environmentVariables={"AGENT_LABEL": "v1"},
    )
    runtime_id, arn = created["agentRuntimeId"], created["agentRuntimeArn"]
    assert wait_settled(lambda: client.get_agent_runtime(agentRuntimeId=runtime_id))["status"] == "READY"
    assert _label(data_plane, arn) == "v1"

    client.create_agent_runtime_endpoint(agentRuntimeId=runtime_id, name="prod", agentRuntimeVersion="1")
    client.update_agent_runtime(
        agentRuntimeId=runtime_id,
        agentRuntimeArtifact=artifact,
        roleArn=ROLE,
        environmentVariables={"AGENT_LABEL": "v2"},
    )
    wait_until(
        lambda: client.get_agent_runtime_endpoint(agentRuntimeId=runtime_id, endpointName="DEFAULT"),
        lambda e: e["status"] == "READY" and e["liveVersion"] == "2",
    )
    wait_until(
        lambda: client.get_agent_runtime_endpoint(agentRuntimeId=runtime_id, endpointName="prod"),
        lambda e: e["status"] == "READY",
    )
    assert _label(data_plane, arn) == "v2"
    assert _label(data_plane, arn, "DEFAULT") == "v2"
    assert _label(data_plane, arn, "prod") == "v1"

    client.update_agent_runtime_endpoint(agentRuntimeId=runtime_id, endpointName="prod", agentRuntimeVersion="2")
    wait_until(
        lambda: client.get_agent_runtime_endpoint(agentRuntimeId=runtime_id, endpointName="prod"),
        lambda e: e["status"] == "READY" and e["liveVersion"] == "2",
    )
    assert _label(data_plane, arn, "prod") == "v2"
    client.update_agent_runtime_endpoint(agentRuntimeId=runtime_id, endpointName="prod", agentRuntimeVersion="1")
    wait_until(
        lambda: client.get_agent_runtime_endpoint(agentRuntimeId=runtime_id, endpointName="prod"),
        lambda e: e["status"] == "READY" and e["liveVersion"] == "1",
    )
    assert _label(data_plane, arn, "prod") == "v1"  # rolled back

    with pytest.raises(ClientError) as excinfo:
        _label(data_plane, arn, "staging")
    assert excinfo.value.response["Error"]["Code"] == "ResourceNotFoundException"
    client.delete_agent_runtime(agentRuntimeId=runtime_id)
    with pytest.raises(ClientError) as excinfo:
        _label(data_plane, arn)
    assert excinfo.value.response["Error"]["Code"] == "ResourceNotFoundException"
