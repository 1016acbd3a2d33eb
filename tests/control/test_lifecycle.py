"""Runtimes, versions and endpoints through real boto3 against a real ``hangar serve`` with real builds.

The echo example is built once (the builder caches by content hash), so later versions with the same code only
differ in configuration and settle quickly.
"""

from __future__ import annotations

import re
from typing import Any

import pytest
from botocore.exceptions import ClientError

from tests.control.support import ROLE, code_artifact, container_artifact, unique_name, wait_settled, wait_until
from tests.support.server import HangarServer


def _get(client: Any, runtime_id: str, **kwargs: Any) -> dict[str, Any]:
    return client.get_agent_runtime(agentRuntimeId=runtime_id, **kwargs)


def _endpoint(client: Any, runtime_id: str, name: str) -> dict[str, Any]:
    return client.get_agent_runtime_endpoint(agentRuntimeId=runtime_id, endpointName=name)


def _ready_runtime(client: Any, **extra: Any) -> str:
    created = client.create_agent_runtime(
        agentRuntimeName=unique_name(), agentRuntimeArtifact=code_artifact(), roleArn=ROLE, **extra
    )
    runtime_id = created["agentRuntimeId"]
    assert wait_settled(lambda: _get(client, runtime_id))["status"] == "READY"
    return runtime_id


def _error(excinfo: pytest.ExceptionInfo[ClientError]) -> tuple[str, int]:
    response = excinfo.value.response
    return response["Error"]["Code"], response["ResponseMetadata"]["HTTPStatusCode"]


def test_create_builds_version_1_and_default_endpoint(client: Any, server: HangarServer) -> None:
    name = unique_name("echo")
    created = client.create_agent_runtime(
        agentRuntimeName=name,
        agentRuntimeArtifact=code_artifact(),
        roleArn=ROLE,
        description="the echo agent",
        environmentVariables={"GREETING": "hi"},
    )
    assert created["ResponseMetadata"]["HTTPStatusCode"] == 202
    assert created["status"] == "CREATING" and created["agentRuntimeVersion"] == "1"
    runtime_id = created["agentRuntimeId"]
    assert re.fullmatch(rf"{name}-[a-zA-Z0-9]{{10}}", runtime_id)
    assert created["agentRuntimeArn"] == f"arn:aws:bedrock-agentcore:us-west-2:123456789012:runtime/{runtime_id}"
    assert created["workloadIdentityDetails"]["workloadIdentityArn"] == (
        "arn:aws:bedrock-agentcore:us-west-2:123456789012:workload-identity-directory/default/workload-identity/"
        + runtime_id
    )

    ready = wait_settled(lambda: _get(client, runtime_id))
    assert ready["status"] == "READY", ready.get("failureReason")
    assert ready["networkConfiguration"] == {"networkMode": "PUBLIC"}
    assert ready["lifecycleConfiguration"] == {"idleRuntimeSessionTimeout": 900, "maxLifetime": 28800}
    assert ready["protocolConfiguration"] == {"serverProtocol": "HTTP"}
    assert ready["environmentVariables"] == {"GREETING": "hi"}
    assert ready["description"] == "the echo agent"
    assert ready["createdAt"].tzinfo is not None
    default = _endpoint(client, runtime_id, "DEFAULT")
    assert default["status"] == "READY" and default["liveVersion"] == "1" and "targetVersion" not in default
    listed = client.list_agent_runtimes()["agentRuntimes"]
    assert any(r["agentRuntimeId"] == runtime_id and r["status"] == "READY" for r in listed)


def test_update_makes_an_immutable_version_and_default_follows(client: Any) -> None:
    runtime_id = _ready_runtime(client, environmentVariables={"V": "1"})
    updated = client.update_agent_runtime(
        agentRuntimeId=runtime_id,
        agentRuntimeArtifact=code_artifact(),
        roleArn=ROLE,
        environmentVariables={"V": "2"},
        lifecycleConfiguration={"idleRuntimeSessionTimeout": 120, "maxLifetime": 600},
    )
    assert updated["ResponseMetadata"]["HTTPStatusCode"] == 202
    assert updated["status"] == "UPDATING" and updated["agentRuntimeVersion"] == "2"
    assert wait_settled(lambda: _get(client, runtime_id))["status"] == "READY"
    default = wait_until(lambda: _endpoint(client, runtime_id, "DEFAULT"), lambda e: e["status"] == "READY")
    assert default["liveVersion"] == "2"
    assert _get(client, runtime_id, agentRuntimeVersion="1")["environmentVariables"] == {"V": "1"}
    second = _get(client, runtime_id, agentRuntimeVersion="2")
    assert second["environmentVariables"] == {"V": "2"}
    assert second["lifecycleConfiguration"] == {"idleRuntimeSessionTimeout": 120, "maxLifetime": 600}
    versions = client.list_agent_runtime_versions(agentRuntimeId=runtime_id)["agentRuntimes"]
    assert [(v["agentRuntimeVersion"], v["status"]) for v in versions] == [("1", "READY"), ("2", "READY")]


def test_named_endpoint_is_pinned_moves_explicitly_and_rolls_back(client: Any) -> None:
    runtime_id = _ready_runtime(client)
    created = client.create_agent_runtime_endpoint(agentRuntimeId=runtime_id, name="prod", agentRuntimeVersion="1")
    assert created["ResponseMetadata"]["HTTPStatusCode"] == 202
    assert created["status"] == "CREATING" and created["targetVersion"] == "1"
    prod = wait_until(lambda: _endpoint(client, runtime_id, "prod"), lambda e: e["status"] == "READY")
    assert prod["liveVersion"] == "1"

    client.update_agent_runtime(agentRuntimeId=runtime_id, agentRuntimeArtifact=code_artifact(), roleArn=ROLE)
    wait_settled(lambda: _get(client, runtime_id))
    assert (
        wait_until(lambda: _endpoint(client, runtime_id, "DEFAULT"), lambda e: e["status"] == "READY")["liveVersion"]
        == "2"
    )
    assert _endpoint(client, runtime_id, "prod")["liveVersion"] == "1"

    moved = client.update_agent_runtime_endpoint(
        agentRuntimeId=runtime_id, endpointName="prod", agentRuntimeVersion="2"
    )
    assert moved["status"] == "UPDATING" and moved["targetVersion"] == "2" and moved["liveVersion"] == "1"
    prod = wait_until(lambda: _endpoint(client, runtime_id, "prod"), lambda e: e["status"] == "READY")
    assert prod["liveVersion"] == "2" and "targetVersion" not in prod

    client.update_agent_runtime_endpoint(agentRuntimeId=runtime_id, endpointName="prod", agentRuntimeVersion="1")
    prod = wait_until(lambda: _endpoint(client, runtime_id, "prod"), lambda e: e["status"] == "READY")
    assert prod["liveVersion"] == "1"

    with pytest.raises(ClientError) as excinfo:
        client.update_agent_runtime_endpoint(agentRuntimeId=runtime_id, endpointName="DEFAULT", agentRuntimeVersion="1")
    assert _error(excinfo) == ("ValidationException", 400)
    names = [e["name"] for e in client.list_agent_runtime_endpoints(agentRuntimeId=runtime_id)["runtimeEndpoints"]]
    assert names == ["DEFAULT", "prod"]


def test_version_and_endpoint_deletion_rules(client: Any) -> None:
    runtime_id = _ready_runtime(client)
    client.update_agent_runtime(agentRuntimeId=runtime_id, agentRuntimeArtifact=code_artifact(), roleArn=ROLE)
    wait_settled(lambda: _get(client, runtime_id))
    client.update_agent_runtime(agentRuntimeId=runtime_id, agentRuntimeArtifact=code_artifact(), roleArn=ROLE)
    wait_settled(lambda: _get(client, runtime_id))
    client.create_agent_runtime_endpoint(agentRuntimeId=runtime_id, name="pinned", agentRuntimeVersion="1")
    wait_until(lambda: _endpoint(client, runtime_id, "pinned"), lambda e: e["status"] == "READY")
    wait_until(lambda: _endpoint(client, runtime_id, "DEFAULT"), lambda e: e.get("liveVersion") == "3")
    one_by_one = {"PageSize": 1}
    pages = client.get_paginator("list_agent_runtime_versions").paginate(
        agentRuntimeId=runtime_id, PaginationConfig=one_by_one
    )
    assert [p["agentRuntimes"][0]["agentRuntimeVersion"] for p in pages] == ["1", "2", "3"]
    pages = client.get_paginator("list_agent_runtime_endpoints").paginate(
        agentRuntimeId=runtime_id, PaginationConfig=one_by_one
    )
    assert [p["runtimeEndpoints"][0]["name"] for p in pages] == ["DEFAULT", "pinned"]

    for served in ("1", "3"):  # "pinned" serves 1, DEFAULT serves 3
        with pytest.raises(ClientError) as excinfo:
            client.delete_agent_runtime(agentRuntimeId=runtime_id, agentRuntimeVersion=served)
        assert _error(excinfo) == ("ConflictException", 409)

    deleted = client.delete_agent_runtime(agentRuntimeId=runtime_id, agentRuntimeVersion="2")
    assert deleted["status"] == "DELETING" and deleted["agentRuntimeVersion"] == "2"
    wait_until(
        lambda: client.list_agent_runtime_versions(agentRuntimeId=runtime_id),
        lambda page: [v["agentRuntimeVersion"] for v in page["agentRuntimes"]] == ["1", "3"],
    )
    with pytest.raises(ClientError) as excinfo:
        _get(client, runtime_id, agentRuntimeVersion="2")
    assert _error(excinfo) == ("ResourceNotFoundException", 404)

    with pytest.raises(ClientError) as excinfo:
        client.delete_agent_runtime_endpoint(agentRuntimeId=runtime_id, endpointName="DEFAULT")
    assert _error(excinfo) == ("ConflictException", 409)
    gone = client.delete_agent_runtime_endpoint(agentRuntimeId=runtime_id, endpointName="pinned")
    assert gone["ResponseMetadata"]["HTTPStatusCode"] == 202 and gone["status"] == "DELETING"
    wait_until(
        lambda: client.list_agent_runtime_endpoints(agentRuntimeId=runtime_id),
        lambda page: [e["name"] for e in page["runtimeEndpoints"]] == ["DEFAULT"],
    )
    # nothing serves version 1 any more, so it can go now
    assert client.delete_agent_runtime(agentRuntimeId=runtime_id, agentRuntimeVersion="1")["status"] == "DELETING"

    whole = client.delete_agent_runtime(agentRuntimeId=runtime_id)
    assert whole["ResponseMetadata"]["HTTPStatusCode"] == 202 and whole["status"] == "DELETING"

    def gone_or_deleting() -> dict[str, Any]:
        try:
            return _get(client, runtime_id)
        except ClientError as exc:
            return {"status": exc.response["Error"]["Code"]}

    assert wait_until(gone_or_deleting, lambda d: d["status"] != "DELETING")["status"] == "ResourceNotFoundException"


def test_failed_builds_and_recovery(client: Any) -> None:
    created = client.create_agent_runtime(
        agentRuntimeName=unique_name("broken"), agentRuntimeArtifact=code_artifact("missing/"), roleArn=ROLE
    )
    runtime_id = created["agentRuntimeId"]
    failed = wait_settled(lambda: _get(client, runtime_id))
    assert failed["status"] == "CREATE_FAILED"
    assert "s3://agents/missing/" in failed["failureReason"]
    default = _endpoint(client, runtime_id, "DEFAULT")
    assert default["status"] == "CREATE_FAILED" and "liveVersion" not in default
    with pytest.raises(ClientError) as excinfo:
        client.create_agent_runtime_endpoint(agentRuntimeId=runtime_id, name="live", agentRuntimeVersion="1")
    assert _error(excinfo) == ("ValidationException", 400)

    client.update_agent_runtime(agentRuntimeId=runtime_id, agentRuntimeArtifact=code_artifact(), roleArn=ROLE)
    assert wait_settled(lambda: _get(client, runtime_id))["status"] == "READY"
    assert (
        wait_until(lambda: _endpoint(client, runtime_id, "DEFAULT"), lambda e: e["status"] == "READY")["liveVersion"]
        == "2"
    )

    client.update_agent_runtime(agentRuntimeId=runtime_id, agentRuntimeArtifact=container_artifact(), roleArn=ROLE)
    failed = wait_settled(lambda: _get(client, runtime_id))
    assert failed["status"] == "UPDATE_FAILED"
    assert failed["failureReason"] == (
        "123456789012.dkr.ecr.us-west-2.amazonaws.com/team/agent:1.0: repository name not known to registry: team/agent"
    )
    default = wait_until(lambda: _endpoint(client, runtime_id, "DEFAULT"), lambda e: e["status"] != "UPDATING")
    assert default["status"] == "UPDATE_FAILED" and default["liveVersion"] == "2"
    versions = client.list_agent_runtime_versions(agentRuntimeId=runtime_id)["agentRuntimes"]
    assert [v["status"] for v in versions] == ["CREATE_FAILED", "READY", "UPDATE_FAILED"]
    # a failed version no endpoint serves can be deleted; the runtime then shows version 2 and its status
    assert client.delete_agent_runtime(agentRuntimeId=runtime_id, agentRuntimeVersion="3")["status"] == "DELETING"
    shown = _get(client, runtime_id)
    assert (shown["agentRuntimeVersion"], shown["status"]) == ("2", "READY") and "failureReason" not in shown
    # version numbers are never reused
    again = client.update_agent_runtime(agentRuntimeId=runtime_id, agentRuntimeArtifact=code_artifact(), roleArn=ROLE)
    assert again["agentRuntimeVersion"] == "4"


def test_container_artifact_is_stored_and_fails_clearly(client: Any) -> None:
    uri = "123456789012.dkr.ecr.us-west-2.amazonaws.com/example/agent@sha256:" + "a" * 64
    created = client.create_agent_runtime(
        agentRuntimeName=unique_name("image"), agentRuntimeArtifact=container_artifact(uri), roleArn=ROLE
    )
    got = wait_settled(lambda: _get(client, created["agentRuntimeId"]))
    assert got["status"] == "CREATE_FAILED"
    assert got["agentRuntimeArtifact"] == {"containerConfiguration": {"containerUri": uri}}
    assert "repository name not known to registry: example/agent" in got["failureReason"]
