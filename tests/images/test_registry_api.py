"""The distribution API in detail with httpx: chunked uploads and their Content-Range checks, cross-repository
mounts, manifests by tag and digest, indexes, tags, deletes, ECR's views of them, and garbage collection."""

from __future__ import annotations

import json
import uuid
from typing import Any

import botocore.exceptions
import httpx
import pytest
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials

from tests.images.conftest import new_repository
from tests.support.oci import OCI_INDEX, OCI_MANIFEST, Entry, RegistryClient, digest_of, image
from tests.support.server import HangarServer, read_admin_key

DOCKER_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"


def test_chunked_upload_with_content_range(registry: RegistryClient, ecr: Any) -> None:
    repo = new_repository(ecr, "chunks")
    data = uuid.uuid4().bytes * 5000
    started = registry.http.post(f"/v2/{repo}/blobs/uploads/")
    assert started.status_code == 202
    location = started.headers["Location"]
    assert started.headers["Range"] == "0-0" and started.headers["Docker-Upload-UUID"] in location
    first = registry.http.patch(location, content=data[:30000], headers={"Content-Range": "0-29999"})
    assert first.status_code == 202 and first.headers["Range"] == "0-29999"
    skipped = registry.http.patch(location, content=data[40000:], headers={"Content-Range": f"40000-{len(data) - 1}"})
    assert skipped.status_code == 416 and skipped.headers["Range"] == "0-29999"
    assert registry.http.get(location).headers["Range"] == "0-29999"  # the refused chunk left nothing behind
    rest = registry.http.patch(location, content=data[30000:], headers={"Content-Range": f"30000-{len(data) - 1}"})
    assert rest.status_code == 202
    wrong = registry.http.put(location, params={"digest": digest_of(b"something else")})
    assert wrong.status_code == 400 and wrong.json()["errors"][0]["code"] == "DIGEST_INVALID"
    assert registry.http.get(location).status_code == 404  # a failed completion ends the session
    # again, right this time, with the last chunk in the PUT
    location = registry.http.post(f"/v2/{repo}/blobs/uploads/").headers["Location"]
    registry.http.patch(location, content=data[:1000])
    done = registry.http.put(location, params={"digest": digest_of(data)}, content=data[1000:])
    assert done.status_code == 201 and done.headers["Docker-Content-Digest"] == digest_of(data)
    fetched = registry.http.get(f"/v2/{repo}/blobs/{digest_of(data)}")
    assert fetched.content == data and fetched.headers["Docker-Content-Digest"] == digest_of(data)
    head = registry.http.head(f"/v2/{repo}/blobs/{digest_of(data)}")
    assert head.headers["Content-Length"] == str(len(data))


def test_upload_cancel_and_unknown_sessions(registry: RegistryClient, ecr: Any) -> None:
    repo = new_repository(ecr, "cancel")
    location = registry.http.post(f"/v2/{repo}/blobs/uploads/").headers["Location"]
    assert registry.http.delete(location).status_code == 204
    assert registry.http.patch(location, content=b"x").json()["errors"][0]["code"] == "BLOB_UPLOAD_UNKNOWN"
    forged = f"/v2/{repo}/blobs/uploads/..%2F..%2Fblobs"
    assert registry.http.patch(forged, content=b"x").status_code == 404
    missing = registry.http.post("/v2/never-created/blobs/uploads/")
    assert missing.status_code == 404 and missing.json()["errors"][0]["code"] == "NAME_UNKNOWN"


def test_mount_manifests_tags_and_deletes(registry: RegistryClient, ecr: Any) -> None:
    source, target = new_repository(ecr, "src"), new_repository(ecr, "dst")
    img = image([[Entry("bin/agent", data=b"agent", mode=0o755)]])
    digest = registry.push(source, img, "v1")
    assert digest == img.digest
    for blob in img.blobs():
        mounted = registry.http.post(f"/v2/{target}/blobs/uploads/", params={"mount": digest_of(blob), "from": source})
        assert mounted.status_code == 201 and mounted.headers["Docker-Content-Digest"] == digest_of(blob)
    not_there = registry.http.post(
        f"/v2/{target}/blobs/uploads/", params={"mount": digest_of(b"absent"), "from": source}
    )
    assert not_there.status_code == 202  # no such blob: an ordinary upload session starts instead
    assert registry.push_manifest(target, "v1", img.manifest).status_code == 201
    assert registry.push_manifest(target, "v2", img.manifest).status_code == 201

    by_tag = registry.http.get(f"/v2/{target}/manifests/v1", headers={"Accept": OCI_MANIFEST})
    by_digest = registry.http.get(f"/v2/{target}/manifests/{digest}")
    assert by_tag.content == by_digest.content == img.manifest
    assert by_tag.headers["Content-Type"] == OCI_MANIFEST and by_tag.headers["Docker-Content-Digest"] == digest
    assert registry.http.head(f"/v2/{target}/manifests/v2").headers["Content-Length"] == str(len(img.manifest))
    assert registry.http.get(f"/v2/{target}/tags/list").json() == {"name": target, "tags": ["v1", "v2"]}
    page = registry.http.get(f"/v2/{target}/tags/list", params={"n": "1"})
    assert page.json()["tags"] == ["v1"] and "last=v1" in page.headers["Link"]

    index = json.dumps(
        {
            "schemaVersion": 2,
            "mediaType": OCI_INDEX,
            "manifests": [
                {
                    "mediaType": OCI_MANIFEST,
                    "digest": digest,
                    "size": len(img.manifest),
                    "platform": {"os": "linux", "architecture": "amd64"},
                }
            ],
        }
    ).encode()
    assert registry.push_manifest(target, "multi", index, OCI_INDEX).status_code == 201
    assert registry.http.get(f"/v2/{target}/manifests/multi").headers["Content-Type"] == OCI_INDEX
    docker_list = json.dumps(
        {
            "schemaVersion": 2,
            "mediaType": DOCKER_LIST,
            "manifests": [
                {
                    "mediaType": OCI_MANIFEST,
                    "digest": digest,
                    "size": len(img.manifest),
                    "platform": {"os": "linux", "architecture": "amd64"},
                }
            ],
        }
    ).encode()
    assert registry.push_manifest(target, "docker-list", docker_list, DOCKER_LIST).status_code == 201
    assert registry.http.get(f"/v2/{target}/manifests/docker-list").headers["Content-Type"] == DOCKER_LIST
    dangling = index.replace(digest.encode(), digest_of(b"nope").encode())
    refused = registry.push_manifest(target, "dangling", dangling, OCI_INDEX)
    assert refused.json()["errors"][0]["code"] == "MANIFEST_BLOB_UNKNOWN"

    # ECR's view: one image with two tags, one index
    details = ecr.describe_images(repositoryName=target)["imageDetails"]
    tags = {d["imageDigest"]: sorted(d.get("imageTags", [])) for d in details}
    assert {d["imageManifestMediaType"] for d in details} == {OCI_MANIFEST, OCI_INDEX, DOCKER_LIST}
    assert tags[digest] == ["v1", "v2"]
    got = ecr.batch_get_image(repositoryName=target, imageIds=[{"imageTag": "v1"}])["images"][0]
    assert got["imageManifest"] == img.manifest.decode() and got["imageId"]["imageDigest"] == digest

    # delete by tag removes the tag only; by digest the manifest and every tag on it
    assert registry.http.delete(f"/v2/{target}/manifests/v2").status_code == 202
    assert registry.http.get(f"/v2/{target}/manifests/v2").status_code == 404
    assert registry.http.get(f"/v2/{target}/manifests/v1").status_code == 200
    assert registry.http.delete(f"/v2/{target}/manifests/{digest}").status_code == 202
    unknown = registry.http.get(f"/v2/{target}/manifests/v1")
    assert unknown.status_code == 404 and unknown.json()["errors"][0]["code"] == "MANIFEST_UNKNOWN"


def test_garbage_collection_keeps_what_is_referenced(hangar: HangarServer, registry: RegistryClient, ecr: Any) -> None:
    repo = new_repository(ecr, "gc")
    kept = image([[Entry("kept", data=uuid.uuid4().bytes)]])
    dropped = image([[Entry("dropped", data=uuid.uuid4().bytes)]])
    registry.push(repo, kept, "kept")
    registry.push(repo, dropped, "dropped")
    orphan = uuid.uuid4().bytes
    registry.push_blob(repo, orphan)
    ecr.batch_delete_image(repositoryName=repo, imageIds=[{"imageTag": "dropped"}])
    request = AWSRequest(method="POST", url=f"{hangar.url}/hangar/images/gc/?graceSeconds=600", data=b"")
    SigV4Auth(Credentials(*read_admin_key(hangar.credentials_file)), "bedrock-agentcore", "us-west-2").add_auth(request)
    recent = httpx.post(request.url, headers=dict(request.headers), content=b"")
    assert recent.status_code == 200, recent.text
    assert registry.http.head(f"/v2/{repo}/blobs/{digest_of(orphan)}").status_code == 200  # too young to go
    request = AWSRequest(method="POST", url=f"{hangar.url}/hangar/images/gc/?graceSeconds=0", data=b"")
    SigV4Auth(Credentials(*read_admin_key(hangar.credentials_file)), "bedrock-agentcore", "us-west-2").add_auth(request)
    answer = httpx.post(request.url, headers=dict(request.headers), content=b"")
    assert answer.status_code == 200, answer.text
    assert answer.json()["removed"]["blobs"] >= 3  # orphan, dropped manifest, its layer (the config may be shared)
    for blob in kept.blobs():
        assert registry.http.head(f"/v2/{repo}/blobs/{digest_of(blob)}").status_code == 200
    assert registry.http.head(f"/v2/{repo}/blobs/{digest_of(orphan)}").status_code == 404
    assert registry.http.head(f"/v2/{repo}/blobs/{digest_of(dropped.layers[0][0])}").status_code == 404
    assert httpx.post(f"{hangar.url}/hangar/images/gc/").status_code == 403  # unsigned: refused


def test_ecr_errors_are_json_protocol_shaped(ecr: Any) -> None:
    with pytest.raises(botocore.exceptions.ClientError) as caught:
        ecr.list_images(repositoryName="does-not-exist")
    assert caught.value.response["Error"]["Code"] == "RepositoryNotFoundException"
    with pytest.raises(botocore.exceptions.ClientError) as caught:
        ecr.describe_images(repositoryName=new_repository(ecr, "empty"), imageIds=[{"imageTag": "nope"}])
    assert caught.value.response["Error"]["Code"] == "ImageNotFoundException"
    with pytest.raises(botocore.exceptions.ClientError) as caught:
        ecr.create_repository(repositoryName="UPPER")
    assert caught.value.response["Error"]["Code"] == "InvalidParameterException"
    paged = ecr.get_paginator("describe_repositories").paginate(PaginationConfig={"PageSize": 2})
    names = [r["repositoryName"] for page in paged for r in page["repositories"]]
    assert len(names) == len(set(names)) >= 2


def test_ecr_put_image_and_batch_get(registry: RegistryClient, ecr: Any) -> None:
    repo = new_repository(ecr, "putimage")
    img = image([[Entry("bin/agent", data=uuid.uuid4().bytes, mode=0o755)]])
    for blob in img.blobs():
        registry.push_blob(repo, blob)
    put = ecr.put_image(repositoryName=repo, imageManifest=img.manifest.decode(), imageTag="api")["image"]
    assert put["imageId"] == {"imageDigest": img.digest, "imageTag": "api"}
    assert registry.http.get(f"/v2/{repo}/manifests/api").content == img.manifest
    with pytest.raises(botocore.exceptions.ClientError) as caught:
        ecr.put_image(repositoryName=repo, imageManifest=img.manifest.decode(), imageDigest=digest_of(b"x"))
    assert caught.value.response["Error"]["Code"] == "ImageDigestDoesNotMatchException"
    document = json.loads(img.manifest)
    document["layers"][0]["digest"] = digest_of(b"never pushed")
    with pytest.raises(botocore.exceptions.ClientError) as caught:
        ecr.put_image(repositoryName=repo, imageManifest=json.dumps(document), imageTag="broken")
    assert caught.value.response["Error"]["Code"] == "LayersNotFoundException"


def _ecr_raw(hangar: HangarServer, operation: str, body: bytes) -> httpx.Response:
    """A SigV4-signed ECR call with a body botocore would never send."""
    headers = {
        "X-Amz-Target": f"AmazonEC2ContainerRegistry_V20150921.{operation}",
        "Content-Type": "application/x-amz-json-1.1",
    }
    request = AWSRequest(method="POST", url=f"{hangar.url}/", data=body, headers=headers)
    SigV4Auth(Credentials(*read_admin_key(hangar.credentials_file)), "ecr", "us-west-2").add_auth(request)
    return httpx.post(request.url, headers=dict(request.headers), content=body)


def test_hostile_requests_get_clear_errors(hangar: HangarServer, registry: RegistryClient, ecr: Any) -> None:
    repo = new_repository(ecr, "odd")
    cases = [
        ("DescribeImages", {"repositoryName": repo, "imageIds": "sha256:abc"}),
        ("DescribeImages", {"repositoryName": repo, "filter": "TAGGED"}),
        ("ListImages", {"repositoryName": repo, "filter": {"tagStatus": "SOMETIMES"}}),
        ("BatchDeleteImage", {"repositoryName": repo, "imageIds": [1, 2]}),
        ("BatchGetImage", {"repositoryName": repo, "imageIds": {"imageTag": "x"}}),
        ("CreateRepository", {"repositoryName": ["a"]}),
        ("DescribeRepositories", {"maxResults": 0}),
        ("ListImages", {"repositoryName": repo, "nextToken": "!!notbase64"}),
    ]
    for operation, document in cases:
        answer = _ecr_raw(hangar, operation, json.dumps(document).encode())
        assert answer.status_code == 400, (operation, answer.text)
        assert answer.json()["__type"] == "InvalidParameterException", (operation, answer.text)
    assert _ecr_raw(hangar, "CreateRepository", b"[]").json()["__type"] == "SerializationException"
    assert _ecr_raw(hangar, "DeleteEverything", b"{}").json()["__type"] == "UnknownOperationException"
    unsigned = httpx.post(f"{hangar.url}/", headers={"X-Amz-Target": "AmazonEC2ContainerRegistry_V20150921.ListImages"})
    assert unsigned.status_code == 403
    # a repository name that would inject a header into Location is refused before anything echoes it
    injected = registry.http.post("/v2/evil%0d%0aSet-Cookie:%20x=1/blobs/uploads/")
    assert injected.status_code == 400 and injected.json()["errors"][0]["code"] == "NAME_INVALID"
    assert registry.http.get("/v2/UPPER/tags/list").json()["errors"][0]["code"] == "NAME_INVALID"
    # "v2" is an API path, never a bucket of the S3 artifact store
    with pytest.raises(botocore.exceptions.ClientError) as caught:
        hangar.boto3_client("s3").create_bucket(Bucket="v2")
    assert caught.value.response["Error"]["Code"] == "InvalidBucketName"
    assert httpx.get(f"{hangar.url}/healthz").status_code == 200
