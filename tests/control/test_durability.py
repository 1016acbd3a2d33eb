"""SIGKILL during a build and during a burst of creates: acknowledged writes survive, nothing is half-written,
nothing stays CREATING/UPDATING after a restart."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
from botocore.exceptions import BotoCoreError, ClientError

from tests.control.support import ROLE, code_artifact, seed_echo, unique_name, wait_settled, wait_until
from tests.support.server import HangarServer


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    data = tmp_path_factory.mktemp("durability") / "data"
    seed_echo(data)
    return data


@pytest.fixture
def server(data_dir: Path) -> Iterator[HangarServer]:
    hangar = HangarServer(data_dir=data_dir).start()
    yield hangar
    hangar.stop()


def _restart(server: HangarServer) -> Any:
    server.kill()
    server.start()
    return server.boto3_client("bedrock-agentcore-control")


def test_sigkill_during_a_build_resumes_it(server: HangarServer, data_dir: Path) -> None:
    client = server.boto3_client("bedrock-agentcore-control")
    created = client.create_agent_runtime(
        agentRuntimeName=unique_name(), agentRuntimeArtifact=code_artifact(), roleArn=ROLE
    )
    runtime_id = created["agentRuntimeId"]
    # while version 1 is being built the runtime cannot take an update
    with pytest.raises(ClientError) as excinfo:
        client.update_agent_runtime(agentRuntimeId=runtime_id, agentRuntimeArtifact=code_artifact(), roleArn=ROLE)
    assert excinfo.value.response["Error"]["Code"] == "ConflictException"
    versions = data_dir / "versions"
    wait_until(lambda: {"building": any(versions.glob(".build-*"))}, lambda d: d["building"], timeout=60)

    client = _restart(server)  # SIGKILL while the builder is writing its environment
    assert client.get_agent_runtime(agentRuntimeId=runtime_id)["status"] in ("CREATING", "READY")
    ready = wait_settled(lambda: client.get_agent_runtime(agentRuntimeId=runtime_id))
    assert ready["status"] == "READY", ready.get("failureReason")
    default = wait_until(
        lambda: client.get_agent_runtime_endpoint(agentRuntimeId=runtime_id, endpointName="DEFAULT"),
        lambda e: e["status"] == "READY",
    )
    assert default["liveVersion"] == "1"

    client.update_agent_runtime(
        agentRuntimeId=runtime_id,
        agentRuntimeArtifact=code_artifact(),
        roleArn=ROLE,
        environmentVariables={"AFTER": "crash"},
    )
    client = _restart(server)  # SIGKILL with version 2 UPDATING
    assert wait_settled(lambda: client.get_agent_runtime(agentRuntimeId=runtime_id))["status"] == "READY"
    assert (
        wait_until(
            lambda: client.get_agent_runtime_endpoint(agentRuntimeId=runtime_id, endpointName="DEFAULT"),
            lambda e: e["status"] == "READY",
        )["liveVersion"]
        == "2"
    )


def test_sigkill_during_a_burst_of_creates(server: HangarServer) -> None:
    client = server.boto3_client("bedrock-agentcore-control")
    acknowledged: list[str] = []
    lock = threading.Lock()
    stop = threading.Event()

    def create(index: int) -> None:
        if stop.is_set():
            return
        try:
            answer = client.create_agent_runtime(
                agentRuntimeName=f"burst_{index}_{unique_name('r')}", agentRuntimeArtifact=code_artifact(), roleArn=ROLE
            )
        except (ClientError, BotoCoreError):
            return  # in flight when the server died: not acknowledged
        # A 202 whose body was cut off by the kill carries no id: the client never learnt of the write.
        if answer["ResponseMetadata"]["HTTPStatusCode"] == 202 and "agentRuntimeId" in answer:
            with lock:
                acknowledged.append(answer["agentRuntimeId"])

    with ThreadPoolExecutor(max_workers=6) as pool:
        futures = [pool.submit(create, i) for i in range(60)]
        deadline = time.monotonic() + 60
        while len(acknowledged) < 15 and time.monotonic() < deadline:
            time.sleep(0.005)
        server.kill()
        stop.set()
        for future in futures:
            future.result()
    assert len(acknowledged) >= 15, (len(acknowledged), server.log()[-4000:])

    server.start()
    client = server.boto3_client("bedrock-agentcore-control")
    listed = client.get_paginator("list_agent_runtimes").paginate().build_full_result()["agentRuntimes"]
    burst = [r for r in listed if r["agentRuntimeName"].startswith("burst_")]
    missing = set(acknowledged) - {r["agentRuntimeId"] for r in burst}
    assert not missing, (missing, server.log()[-4000:])
    for runtime in burst:  # every visible runtime is whole: version 1 and its DEFAULT endpoint
        runtime_id = runtime["agentRuntimeId"]
        versions = client.list_agent_runtime_versions(agentRuntimeId=runtime_id)["agentRuntimes"]
        assert [v["agentRuntimeVersion"] for v in versions] == ["1"], (runtime_id, versions)
        client.get_agent_runtime_endpoint(agentRuntimeId=runtime_id, endpointName="DEFAULT")
    for runtime in burst:  # and none stays CREATING
        settled = wait_settled(lambda r=runtime: client.get_agent_runtime(agentRuntimeId=r["agentRuntimeId"]))
        assert settled["status"] == "READY", (settled, server.log()[-4000:])


def test_delete_during_a_build_and_sigkill_finishes_the_delete(server: HangarServer, data_dir: Path) -> None:
    """Delete a runtime while its first build runs, crash at once: after the restart it is gone for good."""
    seed_echo(data_dir, key="echo_fresh")
    (data_dir / "artifacts" / "agents" / "echo_fresh" / "extra.txt").write_text("changes the content hash\n")
    client = server.boto3_client("bedrock-agentcore-control")
    created = client.create_agent_runtime(
        agentRuntimeName=unique_name(), agentRuntimeArtifact=code_artifact("echo_fresh/"), roleArn=ROLE
    )
    runtime_id = created["agentRuntimeId"]
    assert client.get_agent_runtime(agentRuntimeId=runtime_id)["status"] == "CREATING"
    assert client.delete_agent_runtime(agentRuntimeId=runtime_id)["status"] == "DELETING"
    client = _restart(server)

    def state() -> dict[str, Any]:
        try:
            return {"status": client.get_agent_runtime(agentRuntimeId=runtime_id)["status"]}
        except ClientError as exc:
            return {"status": exc.response["Error"]["Code"]}

    assert wait_until(state, lambda d: d["status"] != "DELETING")["status"] == "ResourceNotFoundException"
    names = [r["agentRuntimeId"] for r in client.list_agent_runtimes()["agentRuntimes"]]
    assert runtime_id not in names
