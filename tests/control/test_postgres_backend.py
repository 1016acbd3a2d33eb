"""The same control plane on PostgreSQL: ``hangar serve`` with HANGAR_DATABASE_URL on a throwaway cluster."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from botocore.exceptions import ClientError

from tests.control.support import (
    ROLE,
    code_artifact,
    container_artifact,
    seed_echo,
    unique_name,
    wait_settled,
    wait_until,
)
from tests.support.postgres import PostgresCluster
from tests.support.server import HangarServer


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, postgres: PostgresCluster) -> Iterator[HangarServer]:
    data_dir = tmp_path_factory.mktemp("pg") / "data"
    seed_echo(data_dir)
    hangar = HangarServer(data_dir=data_dir, env={"HANGAR_DATABASE_URL": postgres.new_database()}).start()
    yield hangar
    hangar.stop()


def test_lifecycle_on_postgresql(client: Any, server: HangarServer) -> None:
    assert not (server.data_dir / "hangar.db").exists()  # nothing went to SQLite
    token = str(uuid.uuid4())
    name = unique_name("pg")
    created = client.create_agent_runtime(
        agentRuntimeName=name,
        agentRuntimeArtifact=code_artifact(),
        roleArn=ROLE,
        clientToken=token,
        tags={"db": "postgres"},
    )
    replay = client.create_agent_runtime(
        agentRuntimeName=name,
        agentRuntimeArtifact=code_artifact(),
        roleArn=ROLE,
        clientToken=token,
        tags={"db": "postgres"},
    )
    assert replay["agentRuntimeId"] == created["agentRuntimeId"]
    runtime_id = created["agentRuntimeId"]
    assert wait_settled(lambda: client.get_agent_runtime(agentRuntimeId=runtime_id))["status"] == "READY"

    client.update_agent_runtime(
        agentRuntimeId=runtime_id, agentRuntimeArtifact=code_artifact(), roleArn=ROLE, environmentVariables={"V": "2"}
    )
    server.kill()  # with version 2 UPDATING
    server.start()
    client = server.boto3_client("bedrock-agentcore-control")
    assert wait_settled(lambda: client.get_agent_runtime(agentRuntimeId=runtime_id))["status"] == "READY"

    client.create_agent_runtime_endpoint(agentRuntimeId=runtime_id, name="prod", agentRuntimeVersion="1")
    prod = wait_until(
        lambda: client.get_agent_runtime_endpoint(agentRuntimeId=runtime_id, endpointName="prod"),
        lambda e: e["status"] == "READY",
    )
    assert prod["liveVersion"] == "1"
    client.update_agent_runtime_endpoint(agentRuntimeId=runtime_id, endpointName="prod", agentRuntimeVersion="2")
    prod = wait_until(
        lambda: client.get_agent_runtime_endpoint(agentRuntimeId=runtime_id, endpointName="prod"),
        lambda e: e["status"] == "READY",
    )
    assert prod["liveVersion"] == "2"
    with pytest.raises(ClientError) as excinfo:
        client.delete_agent_runtime(agentRuntimeId=runtime_id, agentRuntimeVersion="2")
    assert excinfo.value.response["Error"]["Code"] == "ConflictException"
    assert client.list_tags_for_resource(resourceArn=created["agentRuntimeArn"])["tags"] == {"db": "postgres"}

    for _ in range(3):
        client.create_agent_runtime(
            agentRuntimeName=unique_name(), agentRuntimeArtifact=container_artifact(), roleArn=ROLE
        )
    pages = list(client.get_paginator("list_agent_runtimes").paginate(PaginationConfig={"PageSize": 1}))
    assert len(pages) == 4 and all(len(p["agentRuntimes"]) == 1 for p in pages)

    client.delete_agent_runtime(agentRuntimeId=runtime_id)

    def state() -> str:
        try:
            return client.get_agent_runtime(agentRuntimeId=runtime_id)["status"]
        except ClientError as exc:
            return exc.response["Error"]["Code"]

    assert wait_until(lambda: {"status": state()}, lambda d: d["status"] != "DELETING")["status"] == (
        "ResourceNotFoundException"
    )


def test_races_on_postgresql(client: Any) -> None:
    """Concurrent creates of one name, and concurrent retries of one clientToken, against PostgreSQL."""
    from concurrent.futures import ThreadPoolExecutor

    name = unique_name("race")

    def attempt(token: str | None) -> str:
        extra = {"clientToken": token} if token else {}
        try:
            return client.create_agent_runtime(
                agentRuntimeName=name, agentRuntimeArtifact=container_artifact(), roleArn=ROLE, **extra
            )["agentRuntimeId"]
        except ClientError as exc:
            return exc.response["Error"]["Code"]

    with ThreadPoolExecutor(max_workers=6) as pool:
        outcomes = list(pool.map(attempt, [None] * 6))
    assert sum(o.startswith(name) for o in outcomes) == 1 and outcomes.count("ConflictException") == 5, outcomes

    name = unique_name("token")
    token = str(uuid.uuid4())
    with ThreadPoolExecutor(max_workers=6) as pool:
        outcomes = list(pool.map(attempt, [token] * 6))
    assert len(set(outcomes)) == 1 and outcomes[0].startswith(name), outcomes


def test_two_gateways_on_one_database(server: HangarServer, client: Any) -> None:
    """A second ``hangar serve`` on the same store: races between processes end the same way, and each
    gateway sees the other's writes."""
    from concurrent.futures import ThreadPoolExecutor

    second = HangarServer(data_dir=server.data_dir, env=dict(server.env)).start()
    try:
        other = second.boto3_client("bedrock-agentcore-control")
        name = unique_name("twin")

        def attempt(index: int) -> str:
            target = client if index % 2 else other
            try:
                return target.create_agent_runtime(
                    agentRuntimeName=name, agentRuntimeArtifact=container_artifact(), roleArn=ROLE
                )["agentRuntimeId"]
            except ClientError as exc:
                return exc.response["Error"]["Code"]

        with ThreadPoolExecutor(max_workers=8) as pool:
            outcomes = list(pool.map(attempt, range(8)))
        winners = [o for o in outcomes if o.startswith(name)]
        assert len(winners) == 1 and outcomes.count("ConflictException") == 7, outcomes
        seen = wait_settled(lambda: other.get_agent_runtime(agentRuntimeId=winners[0]))
        assert seen["status"] == "CREATE_FAILED"
        assert client.get_agent_runtime(agentRuntimeId=winners[0])["status"] == "CREATE_FAILED"
    finally:
        second.stop()
