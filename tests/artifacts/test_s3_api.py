"""The artifact store's S3 subset, driven by real S3 clients (boto3, the aws CLI) against a real ``hangar serve``."""

from __future__ import annotations

import hashlib
import http.client
import os
import subprocess
import sys
import time
from pathlib import Path

import boto3
import httpx
import pytest
from botocore.auth import S3SigV4Auth, SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.config import Config
from botocore.credentials import Credentials
from botocore.exceptions import ClientError

from tests.support.server import HangarServer, read_admin_key

AWS = Path(sys.executable).parent / "aws"


@pytest.fixture(scope="module")
def s3(hangar: HangarServer):  # type: ignore[no-untyped-def]
    client = hangar.boto3_client("s3", s3={"addressing_style": "path"})
    client.create_bucket(Bucket="hangar-artifacts")
    return client


class ClaimsOtherBody(S3SigV4Auth):
    """Signs honestly, but for a body other than the one that is then sent."""

    def payload(self, request: AWSRequest) -> str:
        return hashlib.sha256(b"what was signed").hexdigest()


def error_code(exc: pytest.ExceptionInfo[ClientError]) -> str:
    return exc.value.response["Error"]["Code"]


def test_put_get_head_list_delete(s3) -> None:  # type: ignore[no-untyped-def]
    put = s3.put_object(Bucket="hangar-artifacts", Key="agents/a b/code.zip", Body=b"first")
    got = s3.get_object(Bucket="hangar-artifacts", Key="agents/a b/code.zip")
    assert got["Body"].read() == b"first"
    assert got["VersionId"] == put["VersionId"] == hashlib.sha256(b"first").hexdigest()[:32]
    assert s3.head_object(Bucket="hangar-artifacts", Key="agents/a b/code.zip")["ContentLength"] == 5
    s3.put_object(Bucket="hangar-artifacts", Key="agents/other.zip", Body=b"2")
    listed = s3.list_objects_v2(Bucket="hangar-artifacts", Prefix="agents/", Delimiter="/")
    assert [c["Key"] for c in listed["Contents"]] == ["agents/other.zip"]
    assert listed["CommonPrefixes"] == [{"Prefix": "agents/a b/"}]
    pages = s3.get_paginator("list_objects_v2").paginate(
        Bucket="hangar-artifacts", Prefix="agents/", PaginationConfig={"PageSize": 1}
    )
    assert [c["Key"] for page in pages for c in page["Contents"]] == ["agents/a b/code.zip", "agents/other.zip"]
    s3.delete_object(Bucket="hangar-artifacts", Key="agents/other.zip")
    with pytest.raises(ClientError) as missing:
        s3.get_object(Bucket="hangar-artifacts", Key="agents/other.zip")
    assert error_code(missing) == "NoSuchKey"


def test_every_version_stays_readable(s3) -> None:  # type: ignore[no-untyped-def]
    first = s3.put_object(Bucket="hangar-artifacts", Key="v/code.zip", Body=b"one")["VersionId"]
    second = s3.put_object(Bucket="hangar-artifacts", Key="v/code.zip", Body=b"two")["VersionId"]
    assert first != second
    assert s3.get_object(Bucket="hangar-artifacts", Key="v/code.zip")["Body"].read() == b"two"
    old = s3.get_object(Bucket="hangar-artifacts", Key="v/code.zip", VersionId=first)
    assert old["Body"].read() == b"one" and old["VersionId"] == first
    with pytest.raises(ClientError) as unknown:
        s3.get_object(Bucket="hangar-artifacts", Key="v/code.zip", VersionId="0" * 32)
    assert error_code(unknown) == "NoSuchVersion"


def test_errors_are_s3_shaped(s3, hangar: HangarServer) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(ClientError) as no_bucket:
        s3.put_object(Bucket="no-such-bucket", Key="k", Body=b"x")
    assert error_code(no_bucket) == "NoSuchBucket"
    with pytest.raises(ClientError) as twice:
        s3.create_bucket(Bucket="hangar-artifacts")
    assert error_code(twice) == "BucketAlreadyOwnedByYou"
    for reserved in ("runtimes", "healthz", "Not_Valid"):
        with pytest.raises(ClientError) as bad_name:
            s3.create_bucket(Bucket=reserved)
        assert error_code(bad_name) == "InvalidBucketName"
    for hidden in (".versions", ".tmp"):  # the store's own bookkeeping is never a bucket
        with pytest.raises(ClientError) as bookkeeping:
            s3.list_objects_v2(Bucket=hidden)
        assert error_code(bookkeeping) == "InvalidBucketName"
    with pytest.raises(ClientError) as dotdot:
        s3.put_object(Bucket="hangar-artifacts", Key="a/../../escape", Body=b"x")
    assert error_code(dotdot) == "InvalidArgument"
    with pytest.raises(ClientError) as long_name:
        s3.put_object(Bucket="hangar-artifacts", Key="a/" + "n" * 256, Body=b"x")
    assert error_code(long_name) == "KeyTooLongError"
    key_id, _secret = read_admin_key(hangar.credentials_file)
    wrong = boto3.client(
        "s3",
        endpoint_url=hangar.url,
        region_name="us-west-2",
        aws_access_key_id=key_id,  # the real key id with a wrong secret
        aws_secret_access_key="x" * 40,
        config=Config(s3={"addressing_style": "path"}, retries={"max_attempts": 1}),
    )
    with pytest.raises(ClientError) as unsigned:
        wrong.list_objects_v2(Bucket="hangar-artifacts")
    assert error_code(unsigned) == "SignatureDoesNotMatch"


def test_only_s3_requests_reach_the_store(s3, hangar: HangarServer) -> None:  # type: ignore[no-untyped-def]
    """The S3 routes come last and step aside for Hangar's own paths, for unsigned requests, and for requests
    signed for another service: those get the gateway's JSON 404, as for any unknown route."""
    s3.put_object(Bucket="hangar-artifacts", Key="visible/code.zip", Body=b"zip")
    key_id, secret = read_admin_key(hangar.credentials_file)
    signed_for_agentcore = AWSRequest("GET", f"{hangar.url}/hangar-artifacts/visible/code.zip")
    SigV4Auth(Credentials(key_id, secret), "bedrock-agentcore", "us-west-2").add_auth(signed_for_agentcore)
    for response in (
        httpx.get(f"{hangar.url}/healthz/whatever"),
        httpx.get(f"{hangar.url}/hangar-artifacts/visible/code.zip"),
        httpx.get(signed_for_agentcore.url, headers=dict(signed_for_agentcore.headers.items())),
    ):
        assert response.status_code == 404 and response.headers["x-amzn-ErrorType"] == "ResourceNotFoundException"
    assert httpx.get(f"{hangar.url}/healthz").json()["status"] == "ok"


def test_body_that_does_not_match_its_signed_hash_is_discarded(s3, hangar: HangarServer) -> None:  # type: ignore[no-untyped-def]
    key_id, secret = read_admin_key(hangar.credentials_file)
    url = f"{hangar.url}/hangar-artifacts/forged.zip"
    request = AWSRequest("PUT", url, data=b"the real body", headers={})
    ClaimsOtherBody(Credentials(key_id, secret), "s3", "us-west-2").add_auth(request)
    assert request.headers["X-Amz-Content-SHA256"] == hashlib.sha256(b"what was signed").hexdigest()
    response = httpx.put(url, content=b"the real body", headers=dict(request.headers.items()))
    assert response.status_code == 400 and b"<Code>XAmzContentSHA256Mismatch</Code>" in response.content
    with pytest.raises(ClientError):
        s3.head_object(Bucket="hangar-artifacts", Key="forged.zip")
    assert not list((hangar.data_dir / "artifacts" / ".tmp").iterdir())


def test_uploads_over_250_mb_are_refused_before_the_body(s3, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    big = tmp_path / "big.zip"
    with big.open("wb") as handle:
        handle.truncate(250 * 1000 * 1000 + 1)  # sparse
    with pytest.raises(ClientError) as too_large, big.open("rb") as body:
        s3.put_object(Bucket="hangar-artifacts", Key="big.zip", Body=body)
    assert error_code(too_large) == "EntityTooLarge"


def test_aws_cli_s3api_and_s3_cp(hangar: HangarServer, tmp_path: Path) -> None:
    source = tmp_path / "code.zip"
    source.write_bytes(b"zip bytes from the aws cli")
    big = tmp_path / "big.zip"
    big.write_bytes(os.urandom(9 * 1024 * 1024))  # above aws s3 cp's 8 MB threshold: a multipart upload
    env = {
        **os.environ,
        "AWS_SHARED_CREDENTIALS_FILE": str(hangar.credentials_file),
        "AWS_CONFIG_FILE": os.devnull,
        "AWS_DEFAULT_REGION": "us-west-2",
        "AWS_EC2_METADATA_DISABLED": "true",
    }
    common = ["--endpoint-url", hangar.url]

    def aws(*args: str) -> str:
        result = subprocess.run([str(AWS), *args, *common], env=env, capture_output=True, text=True, timeout=120)
        assert result.returncode == 0, result.stderr
        return result.stdout

    aws("s3", "mb", "s3://cli-bucket")
    aws("s3api", "put-object", "--bucket", "cli-bucket", "--key", "api/code.zip", "--body", str(source))
    aws("s3", "cp", str(source), "s3://cli-bucket/cp/code.zip")
    listing = aws("s3", "ls", "s3://cli-bucket/", "--recursive")
    assert "api/code.zip" in listing and "cp/code.zip" in listing
    aws("s3", "cp", "s3://cli-bucket/cp/code.zip", str(tmp_path / "back.zip"))
    assert (tmp_path / "back.zip").read_bytes() == source.read_bytes()
    aws("s3", "cp", str(big), "s3://cli-bucket/multipart/big.zip")
    aws("s3", "cp", "s3://cli-bucket/multipart/big.zip", str(tmp_path / "big-back.zip"))  # ranged GETs
    assert (tmp_path / "big-back.zip").read_bytes() == big.read_bytes()


def test_multipart_parts_are_checked(s3, hangar: HangarServer) -> None:  # type: ignore[no-untyped-def]
    key = "mp/code.zip"
    upload_id = s3.create_multipart_upload(Bucket="hangar-artifacts", Key=key)["UploadId"]
    first = s3.upload_part(Bucket="hangar-artifacts", Key=key, UploadId=upload_id, PartNumber=1, Body=b"a" * 10)
    second = s3.upload_part(Bucket="hangar-artifacts", Key=key, UploadId=upload_id, PartNumber=2, Body=b"b" * 5)
    with pytest.raises(ClientError) as wrong_etag:
        s3.complete_multipart_upload(
            Bucket="hangar-artifacts",
            Key=key,
            UploadId=upload_id,
            MultipartUpload={"Parts": [{"PartNumber": 1, "ETag": second["ETag"]}]},
        )
    assert error_code(wrong_etag) == "InvalidPart"
    done = s3.complete_multipart_upload(
        Bucket="hangar-artifacts",
        Key=key,
        UploadId=upload_id,
        MultipartUpload={"Parts": [{"PartNumber": n, "ETag": part["ETag"]} for n, part in ((1, first), (2, second))]},
    )
    assert done["VersionId"] == hashlib.sha256(b"a" * 10 + b"b" * 5).hexdigest()[:32]
    assert s3.get_object(Bucket="hangar-artifacts", Key=key)["Body"].read() == b"a" * 10 + b"b" * 5

    aborted = s3.create_multipart_upload(Bucket="hangar-artifacts", Key=key)["UploadId"]
    s3.abort_multipart_upload(Bucket="hangar-artifacts", Key=key, UploadId=aborted)
    with pytest.raises(ClientError) as gone:
        s3.upload_part(Bucket="hangar-artifacts", Key=key, UploadId=aborted, PartNumber=1, Body=b"x")
    assert error_code(gone) == "NoSuchUpload"
    assert not list((hangar.data_dir / "artifacts" / ".tmp" / "multipart").iterdir())


def test_a_part_that_would_pass_250_mb_is_refused_before_its_body(s3, hangar: HangarServer) -> None:  # type: ignore[no-untyped-def]
    upload_id = s3.create_multipart_upload(Bucket="hangar-artifacts", Key="mp/huge.zip")["UploadId"]
    s3.upload_part(Bucket="hangar-artifacts", Key="mp/huge.zip", UploadId=upload_id, PartNumber=1, Body=b"x" * 1000)
    key_id, secret = read_admin_key(hangar.credentials_file)
    url = f"{hangar.url}/hangar-artifacts/mp/huge.zip?partNumber=2&uploadId={upload_id}"
    request = AWSRequest("PUT", url, headers={"Content-Length": str(250 * 1000 * 1000 - 999)})
    request.headers["X-Amz-Content-SHA256"] = "UNSIGNED-PAYLOAD"
    S3SigV4Auth(Credentials(key_id, secret), "s3", "us-west-2").add_auth(request)
    connection = http.client.HTTPConnection("127.0.0.1", hangar.port, timeout=30)
    connection.putrequest("PUT", url[len(hangar.url) :], skip_accept_encoding=True)
    for name, value in request.headers.items():
        connection.putheader(name, value)
    connection.endheaders()  # the body is never sent: the answer must come first
    response = connection.getresponse()
    assert response.status == 400 and b"<Code>EntityTooLarge</Code>" in response.read()
    connection.close()


def test_an_abandoned_upload_leaves_no_file(s3, hangar: HangarServer) -> None:  # type: ignore[no-untyped-def]
    key_id, secret = read_admin_key(hangar.credentials_file)
    url = f"{hangar.url}/hangar-artifacts/abandoned.zip"
    request = AWSRequest("PUT", url, headers={"Content-Length": "100000"})
    request.headers["X-Amz-Content-SHA256"] = "UNSIGNED-PAYLOAD"
    S3SigV4Auth(Credentials(key_id, secret), "s3", "us-west-2").add_auth(request)
    connection = http.client.HTTPConnection("127.0.0.1", hangar.port, timeout=30)
    connection.putrequest("PUT", "/hangar-artifacts/abandoned.zip", skip_accept_encoding=True)
    for name, value in request.headers.items():
        connection.putheader(name, value)
    connection.endheaders(b"only the first bytes")
    connection.close()
    uploads = hangar.data_dir / "artifacts" / ".tmp"
    deadline = time.monotonic() + 30
    while list(uploads.glob("upload-*")) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not list(uploads.glob("upload-*"))
    with pytest.raises(ClientError):
        s3.head_object(Bucket="hangar-artifacts", Key="abandoned.zip")
    assert "unhandled error" not in hangar.log()
