"""Real clients against a real ``hangar serve``: boto3, the aws CLI (v1) and ``hangar credentials``."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from botocore.exceptions import ClientError

from tests.support.server import HangarServer, free_port, read_admin_key

BIN = Path(sys.executable).parent
_AWS_ENV = {"AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_PROFILE"}


def run(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """Run a client with only the credentials the test gives it (none inherited from this shell)."""
    environment = {k: v for k, v in os.environ.items() if k not in _AWS_ENV}
    environment.update({"AWS_EC2_METADATA_DISABLED": "true", **(env or {})})
    return subprocess.run(args, capture_output=True, text=True, timeout=120, env=environment)


def aws(server: HangarServer, credentials_file: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return run(
        str(BIN / "aws"),
        *args,
        "--endpoint-url",
        server.url,
        "--region",
        "us-west-2",
        env={"AWS_SHARED_CREDENTIALS_FILE": str(credentials_file), "AWS_CONFIG_FILE": os.devnull},
    )


def hangar_cli(server: HangarServer, *args: str) -> subprocess.CompletedProcess[str]:
    return run(
        str(BIN / "hangar"), "credentials", *args, "--endpoint-url", server.url, "--data-dir", str(server.data_dir)
    )


def test_boto3_control_plane_call_with_the_admin_key(auth_server: HangarServer) -> None:
    client = auth_server.boto3_client("bedrock-agentcore-control")
    assert "agentRuntimes" in client.list_agent_runtimes(maxResults=5)


def test_boto3_with_a_wrong_secret_gets_invalid_signature(auth_server: HangarServer, admin_key) -> None:
    import boto3

    client = boto3.client(
        "bedrock-agentcore-control",
        endpoint_url=auth_server.url,
        region_name="us-west-2",
        aws_access_key_id=admin_key[0],
        aws_secret_access_key="B" * 40,
    )
    with pytest.raises(ClientError) as caught:
        client.list_agent_runtimes()
    assert caught.value.response["Error"]["Code"] == "InvalidSignatureException"
    assert caught.value.response["ResponseMetadata"]["HTTPStatusCode"] == 403


def test_aws_cli_with_the_credentials_file(auth_server: HangarServer, tmp_path: Path) -> None:
    done = aws(auth_server, auth_server.credentials_file, "bedrock-agentcore-control", "list-agent-runtimes")
    assert done.returncode == 0, done.stderr
    assert "agentRuntimes" in json.loads(done.stdout)
    wrong = tmp_path / "wrong"
    key_id, _ = read_admin_key(auth_server.credentials_file)
    wrong.write_text(f"[default]\naws_access_key_id = {key_id}\naws_secret_access_key = {'C' * 40}\n")
    refused = aws(auth_server, wrong, "bedrock-agentcore-control", "list-agent-runtimes")
    assert refused.returncode != 0
    assert "InvalidSignatureException" in refused.stderr
    assert "C" * 40 not in refused.stderr + auth_server.log()


def test_credentials_cli_lifecycle(auth_server: HangarServer, tmp_path: Path) -> None:
    output = tmp_path / "ci-credentials"
    created = hangar_cli(auth_server, "create", "ci-pipeline", "--json", "--output", str(output))
    assert created.returncode == 0, created.stderr
    key = json.loads(created.stdout)
    assert key["name"] == "ci-pipeline" and len(key["secretAccessKey"]) == 40
    assert oct(output.stat().st_mode & 0o777) == "0o600"

    used = aws(auth_server, output, "bedrock-agentcore-control", "list-agent-runtimes")
    assert used.returncode == 0, used.stderr

    listed = hangar_cli(auth_server, "list", "--json")
    assert listed.returncode == 0, listed.stderr
    entry = next(k for k in json.loads(listed.stdout) if k["accessKeyId"] == key["accessKeyId"])
    assert entry["lastUsedAt"] is not None and "secretAccessKey" not in entry
    assert key["secretAccessKey"] not in listed.stdout

    table = hangar_cli(auth_server, "list")
    assert table.returncode == 0 and "ci-pipeline" in table.stdout

    deleted = hangar_cli(auth_server, "delete", key["accessKeyId"])
    assert deleted.returncode == 0, deleted.stderr
    after = aws(auth_server, output, "bedrock-agentcore-control", "list-agent-runtimes")
    assert after.returncode != 0 and "UnrecognizedClientException" in after.stderr


def test_credentials_cli_errors_are_readable(auth_server: HangarServer) -> None:
    missing = hangar_cli(auth_server, "delete", "HGRANOSUCHKEY0000000")
    assert missing.returncode == 3  # docs/cli.md: 3 = not found, 4 = unreachable
    assert "ResourceNotFoundException" in missing.stderr and "Traceback" not in missing.stderr
    unreachable = run(
        str(BIN / "hangar"),
        "credentials",
        "list",
        "--endpoint-url",
        "http://127.0.0.1:9",
        "--data-dir",
        str(auth_server.data_dir),
    )
    assert unreachable.returncode == 4 and "cannot reach" in unreachable.stderr


def test_last_key_cannot_be_deleted(tmp_path: Path) -> None:
    server = HangarServer(data_dir=tmp_path / "data").start()
    try:
        key_id, _ = read_admin_key(server.credentials_file)
        refused = hangar_cli(server, "delete", key_id)
        assert refused.returncode == 1 and "ConflictException" in refused.stderr
    finally:
        server.stop()


def test_restart_keeps_the_admin_key_and_a_lost_file_gets_a_new_one(tmp_path: Path) -> None:
    server = HangarServer(data_dir=tmp_path / "data").start()
    first = read_admin_key(server.credentials_file)
    server.stop()
    server.port = free_port()  # a fresh port: another test may have taken the old one meanwhile
    server.start()
    try:
        assert read_admin_key(server.credentials_file) == first
        assert server.boto3_client("bedrock-agentcore-control").list_agent_runtimes()
    finally:
        server.stop()
    server.credentials_file.unlink()
    server.port = free_port()
    server.start()
    try:
        second = read_admin_key(server.credentials_file)
        assert second != first
        assert server.boto3_client("bedrock-agentcore-control").list_agent_runtimes()
    finally:
        server.stop()


def test_boto3_s3_upload_and_a_week_long_presigned_download(auth_server: HangarServer) -> None:
    """The artifact store speaks S3: S3SigV4Auth signatures (path as sent, x-amz-content-sha256) verify."""
    import httpx

    s3 = auth_server.boto3_client("s3", s3={"addressing_style": "path"}, signature_version="s3v4")
    s3.create_bucket(Bucket="auth-test")
    body = b"zip bytes " * 5000
    s3.put_object(Bucket="auth-test", Key="agents/a b+c/code.zip", Body=body)
    assert s3.get_object(Bucket="auth-test", Key="agents/a b+c/code.zip")["Body"].read() == body
    url = s3.generate_presigned_url(
        "get_object", Params={"Bucket": "auth-test", "Key": "agents/a b+c/code.zip"}, ExpiresIn=7 * 24 * 3600
    )
    assert httpx.get(url).content == body
    assert httpx.get(url.replace("code.zip", "other.zip")).status_code == 403
