"""The data dir's file system full (a small tmpfs filled to the last block): control-plane writes (SQLite), builds,
artifact uploads (S3 PutObject) and invokes with spooled bodies each get an AWS-shaped error that says so, nothing
acknowledged is lost, the server stays up, and everything works again once space is freed.
"""

from __future__ import annotations

import errno
import json
import os
import shutil
import subprocess
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from botocore.exceptions import ClientError

from tests.control.support import wait_settled
from tests.dataplane.support import BUCKET, ROLE, deploy, new_session_id, seed, world_readable_dir
from tests.support import residue
from tests.support.server import HangarServer

TMPFS_SIZE = "256m"
LARGE = 3 * 1024 * 1024  # above the 1 MiB the gateway keeps in memory: spooled to the data dir

pytestmark = pytest.mark.skipif(
    os.geteuid() != 0 or shutil.which("bwrap") is None, reason="needs root (tmpfs mount) and bubblewrap"
)


@dataclass
class Full:
    server: HangarServer
    data_dir: Path
    runtime: dict[str, Any]
    filler: Path

    def fill(self, leave: int = 0) -> None:
        """Write the filler until the file system refuses another byte, then give ``leave`` bytes back."""
        with open(self.filler, "ab", buffering=0) as out:
            for size in (1024 * 1024, 4096, 1):
                block = b"\0" * size
                try:
                    while True:
                        out.write(block)
                except OSError as exc:
                    assert exc.errno == errno.ENOSPC, exc
        assert shutil.disk_usage(self.data_dir).free == 0
        if leave:
            os.truncate(self.filler, self.filler.stat().st_size - leave)

    def free(self) -> None:
        self.filler.unlink(missing_ok=True)


@pytest.fixture(scope="module")
def full() -> Iterator[Full]:
    with world_readable_dir("hangar-diskfull-") as root:
        mount = root / "fs"
        mount.mkdir()
        subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={TMPFS_SIZE},mode=0755", "tmpfs", str(mount)], check=True)
        try:
            data_dir = mount / "data"
            seed(data_dir, "testbed")
            server = HangarServer(data_dir=data_dir)
            # the server's log outside the full file system (as journald would be), so it tells what happened
            (data_dir / f"server-{server.port}.log").symlink_to(root / "server.log")
            server.start()
            try:
                runtime = deploy(server.boto3_client("bedrock-agentcore-control"), "testbed")
                yield Full(server, data_dir, runtime, mount / "filler")
            finally:
                server.stop()
                left = residue.snapshot(data_dir)
                assert residue.residue(left, data_dir) == []
        finally:
            subprocess.run(["umount", "-l", str(mount)], check=False)


def _server_error(exc: ClientError) -> tuple[int, str, str]:
    status = exc.response["ResponseMetadata"]["HTTPStatusCode"]
    return status, exc.response["Error"]["Code"], exc.response["Error"].get("Message", "")


def _assert_disk_full_error(exc: ClientError) -> None:
    status, code, message = _server_error(exc)
    assert status >= 500, (status, code, message)
    assert code in ("InternalServerException", "InternalError"), (status, code, message)  # JSON APIs, S3
    assert "space" in message.lower(), (status, code, message)


def _artifact(prefix: str) -> dict[str, Any]:
    return {
        "codeConfiguration": {
            "code": {"s3": {"bucket": BUCKET, "prefix": f"{prefix}/"}},
            "runtime": "PYTHON_3_11",
            "entryPoint": ["main.py"],
        }
    }


def _invoke(server: HangarServer, arn: str, session_id: str, payload: bytes) -> dict[str, Any]:
    data = server.boto3_client("bedrock-agentcore")
    answer = data.invoke_agent_runtime(agentRuntimeArn=arn, runtimeSessionId=session_id, payload=payload)
    return dict(json.loads(answer["response"].read()))


def test_disk_full_gives_aws_errors_loses_nothing_and_recovers(full: Full) -> None:
    server, arn = full.server, full.runtime["agentRuntimeArn"]
    control, s3 = server.boto3_client("bedrock-agentcore-control"), server.boto3_client("s3")
    session = new_session_id()
    big = json.dumps({"pad": "x" * LARGE}).encode()
    assert _invoke(server, arn, session, big)["count"] == 1  # a session, and a spooled body, before the disk fills
    s3.put_object(Bucket=BUCKET, Key="kept/main.py", Body=b"print('kept')\n")
    acknowledged: dict[str, str] = {full.runtime["agentRuntimeId"]: "1"}

    full.fill()
    try:
        with pytest.raises(ClientError) as put:
            s3.put_object(Bucket=BUCKET, Key="upload/blob.bin", Body=os.urandom(2 * 1024 * 1024))
        _assert_disk_full_error(put.value)
        with pytest.raises(ClientError) as invoke:
            _invoke(server, arn, session, big)
        _assert_disk_full_error(invoke.value)
        # Control-plane writes: refused with an AWS-shaped error, or acknowledged and then kept (a build that cannot
        # write its environment fails with a reason rather than staying CREATING).
        try:
            created = control.create_agent_runtime(
                agentRuntimeName=f"full_{uuid.uuid4().hex[:8]}", agentRuntimeArtifact=_artifact("testbed"), roleArn=ROLE
            )
            acknowledged[created["agentRuntimeId"]] = "1"
        except ClientError as exc:
            _assert_disk_full_error(exc)
        try:
            updated = control.update_agent_runtime(
                agentRuntimeId=full.runtime["agentRuntimeId"], agentRuntimeArtifact=_artifact("testbed"), roleArn=ROLE
            )
            acknowledged[full.runtime["agentRuntimeId"]] = updated["agentRuntimeVersion"]
        except ClientError as exc:
            _assert_disk_full_error(exc)
        assert httpx.get(f"{server.url}/healthz", timeout=10).status_code == 200
        assert _invoke(server, arn, session, b"{}")["count"] == 2  # small bodies need no disk: the session serves
        try:  # a new session: its sandbox lives outside the data dir, but the session table may not have room
            assert _invoke(server, arn, new_session_id(), b"{}")["count"] == 1
        except ClientError as exc:
            _assert_disk_full_error(exc)
    finally:
        full.free()

    assert server.process is not None and server.process.poll() is None, "the server died"
    for runtime_id, version in acknowledged.items():
        doc = wait_settled(lambda rid=runtime_id: control.get_agent_runtime(agentRuntimeId=rid), timeout=120)
        listed = control.list_agent_runtime_versions(agentRuntimeId=runtime_id)["agentRuntimes"]
        assert version in {v["agentRuntimeVersion"] for v in listed}, (runtime_id, version, listed)
        assert doc["status"] == "READY" or doc.get("failureReason"), doc
    assert s3.get_object(Bucket=BUCKET, Key="kept/main.py")["Body"].read() == b"print('kept')\n"
    with pytest.raises(ClientError) as partial:
        s3.get_object(Bucket=BUCKET, Key="upload/blob.bin")
    assert partial.value.response["Error"]["Code"] == "NoSuchKey"  # the refused upload left no half-object

    s3.put_object(Bucket=BUCKET, Key="upload/blob.bin", Body=b"y" * (2 * 1024 * 1024))
    assert len(s3.get_object(Bucket=BUCKET, Key="upload/blob.bin")["Body"].read()) == 2 * 1024 * 1024
    assert _invoke(server, arn, session, big)["count"] == 3
    again = deploy(control, "testbed")
    assert _invoke(server, again["agentRuntimeArn"], new_session_id(), big)["count"] == 1
    assert httpx.get(f"{server.url}/healthz", timeout=10).status_code == 200


def test_a_build_that_runs_out_of_space_fails_with_a_reason(full: Full) -> None:
    """Room for the store's rows but not for an environment: the version ends CREATE_FAILED saying why, never
    CREATING forever; the same artifact builds once space is back."""
    control = full.server.boto3_client("bedrock-agentcore-control")
    fresh = full.data_dir / "artifacts" / BUCKET / "fresh"
    shutil.copytree(full.data_dir / "artifacts" / BUCKET / "testbed", fresh)
    (fresh / "nonce.txt").write_text(uuid.uuid4().hex)  # new content: no cached environment to reuse
    full.fill(leave=1024 * 1024)
    try:
        runtime_id = control.create_agent_runtime(
            agentRuntimeName=f"tight_{uuid.uuid4().hex[:8]}", agentRuntimeArtifact=_artifact("fresh"), roleArn=ROLE
        )["agentRuntimeId"]
        failed = wait_settled(lambda: control.get_agent_runtime(agentRuntimeId=runtime_id), timeout=120)
        assert failed["status"] == "CREATE_FAILED", failed
        assert "space" in failed["failureReason"].lower(), failed["failureReason"]
        assert httpx.get(f"{full.server.url}/healthz", timeout=10).status_code == 200
    finally:
        full.free()
    assert not list((full.data_dir / "versions").glob(".build-*")), "a failed build left its half-written environment"
    control.update_agent_runtime(agentRuntimeId=runtime_id, agentRuntimeArtifact=_artifact("fresh"), roleArn=ROLE)
    ready = wait_settled(lambda: control.get_agent_runtime(agentRuntimeId=runtime_id), timeout=120)
    assert ready["status"] == "READY", ready
    assert _invoke(full.server, ready["agentRuntimeArn"], new_session_id(), b"{}")["count"] == 1
