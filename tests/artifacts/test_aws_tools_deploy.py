"""Deploying with plain AWS tools only: objects put with boto3's S3 client, runtimes made with the control API."""

from __future__ import annotations

import io
import time
import zipfile

import pytest

from tests.support.server import HangarServer

ROLE = "arn:aws:iam::123456789012:role/hangar-runtime"
MAIN = "from hangar.sdk import BedrockAgentCoreApp\n\napp = BedrockAgentCoreApp()\n"


@pytest.fixture(scope="module")
def clients(hangar: HangarServer):  # type: ignore[no-untyped-def]
    s3 = hangar.boto3_client("s3", s3={"addressing_style": "path"})
    s3.create_bucket(Bucket="plain-aws")
    return s3, hangar.boto3_client("bedrock-agentcore-control")


def wait_final(control, runtime_id: str, version: str) -> dict:  # type: ignore[no-untyped-def, type-arg]
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        found = control.get_agent_runtime(agentRuntimeId=runtime_id, agentRuntimeVersion=version)
        if found["status"] not in ("CREATING", "UPDATING"):
            return found
        time.sleep(0.2)
    raise AssertionError(f"{runtime_id} version {version} did not settle")


def code(bucket: str, prefix: str, version_id: str | None = None) -> dict:  # type: ignore[type-arg]
    location = {"bucket": bucket, "prefix": prefix, **({"versionId": version_id} if version_id else {})}
    return {"codeConfiguration": {"code": {"s3": location}, "runtime": "PYTHON_3_11", "entryPoint": ["main.py"]}}


def zipped(files: dict[str, str]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for name, text in files.items():
            archive.writestr(name, text)
    return buffer.getvalue()


def test_folder_uploaded_object_by_object(clients) -> None:  # type: ignore[no-untyped-def]
    s3, control = clients
    for name, text in {"main.py": MAIN, "lib/helpers.py": "X = 1\n", "requirements.txt": "six==1.17.0\n"}.items():
        s3.put_object(Bucket="plain-aws", Key=f"folder-agent/{name}", Body=text.encode())
    created = control.create_agent_runtime(
        agentRuntimeName="folder_agent",
        agentRuntimeArtifact=code("plain-aws", "folder-agent/"),
        roleArn=ROLE,
        networkConfiguration={"networkMode": "PUBLIC"},
    )
    final = wait_final(control, created["agentRuntimeId"], created["agentRuntimeVersion"])
    assert final["status"] == "READY", final.get("failureReason")


def test_version_id_pins_the_bytes_that_were_put(clients) -> None:  # type: ignore[no-untyped-def]
    s3, control = clients
    good = s3.put_object(Bucket="plain-aws", Key="pinned/code.zip", Body=zipped({"main.py": MAIN}))["VersionId"]
    s3.put_object(Bucket="plain-aws", Key="pinned/code.zip", Body=zipped({"other.py": ""}))  # no main.py any more
    created = control.create_agent_runtime(
        agentRuntimeName="pinned_agent",
        agentRuntimeArtifact=code("plain-aws", "pinned/code.zip", good),
        roleArn=ROLE,
        networkConfiguration={"networkMode": "PUBLIC"},
    )
    assert wait_final(control, created["agentRuntimeId"], "1")["status"] == "READY"
    updated = control.update_agent_runtime(
        agentRuntimeId=created["agentRuntimeId"],
        agentRuntimeArtifact=code("plain-aws", "pinned/code.zip"),  # the current object: its main.py is gone
        roleArn=ROLE,
        networkConfiguration={"networkMode": "PUBLIC"},
    )
    failed = wait_final(control, created["agentRuntimeId"], updated["agentRuntimeVersion"])
    assert failed["status"] == "UPDATE_FAILED"
    assert failed["failureReason"] == "entryPoint file 'main.py' is not in the code artifact"
