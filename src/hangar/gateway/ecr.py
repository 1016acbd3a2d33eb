"""The ECR API subset a user touches (JSON 1.1 protocol: ``POST /`` with ``X-Amz-Target``, SigV4 for ``ecr``).

GetAuthorizationToken, CreateRepository, DescribeRepositories, ListImages, DescribeImages, BatchDeleteImage,
DeleteRepository, BatchGetImage and PutImage, shaped as botocore's ``ecr`` model says. Errors carry ``__type`` in
the body, which is what botocore's JSON parser reads as the error code.
"""

from __future__ import annotations

import base64
import hashlib
import json
from collections.abc import Callable
from datetime import datetime
from typing import Any

import anyio.to_thread
from starlette.requests import Request
from starlette.responses import Response

from hangar.artifacts.images.errors import EcrError, RegistryError
from hangar.control.registry import Registry, check_repository_name
from hangar.domain.errors import HangarError, InternalError
from hangar.domain.types import Principal
from hangar.gateway import authn, logs_api
from hangar.gateway.app import read_capped_body
from hangar.gateway.registry import issue_password
from hangar.gateway.routing import Route
from hangar.store.images import ManifestRow, RepositoryRow

# How a refused manifest reads in ECR's vocabulary (PutImage).
_REGISTRY_CODES = {
    "MANIFEST_BLOB_UNKNOWN": "LayersNotFoundException",
    "DIGEST_INVALID": "ImageDigestDoesNotMatchException",
    "NAME_UNKNOWN": "RepositoryNotFoundException",
    "MANIFEST_UNKNOWN": "ImageNotFoundException",
}
TARGET_PREFIX = "AmazonEC2ContainerRegistry_V20150921."
CONTENT_TYPE = "application/x-amz-json-1.1"
MAX_BODY = 1024 * 1024
MAX_RESULTS = 1000


def _answer(document: dict[str, Any], status: int = 200) -> Response:
    return Response(json.dumps(document), status_code=status, media_type=CONTENT_TYPE)


def _fail(exc: HangarError, request_id: str) -> Response:
    body = {"__type": exc.code, "message": exc.message}
    response = Response(json.dumps(body), status_code=exc.status, media_type=CONTENT_TYPE)
    response.headers["x-amzn-ErrorType"] = exc.code
    response.headers["x-amzn-RequestId"] = request_id
    return response


def _epoch(value: datetime) -> float:
    return value.timestamp()


def _invalid(message: str) -> EcrError:
    return EcrError("InvalidParameterException", message)


def _string(document: dict[str, Any], key: str, *, required: bool = False) -> str | None:
    value = document.get(key)
    if value is None:
        if required:
            raise _invalid(f"Missing required parameter: '{key}'")
        return None
    if not isinstance(value, str):
        raise _invalid(f"Invalid type for parameter {key}: expected a string")
    return value


def _image_ids(document: dict[str, Any], *, required: bool) -> list[dict[str, Any]] | None:
    value = document.get("imageIds")
    if value is None and not required:
        return None
    if not isinstance(value, list) or not value or len(value) > 100:
        raise _invalid("imageIds must be a list of 1 to 100 image identifiers")
    if not all(isinstance(item, dict) for item in value):
        raise _invalid("each imageIds member must be an object with imageDigest and/or imageTag")
    return value


def _tag_status(document: dict[str, Any]) -> str:
    found = document.get("filter")
    if found is None:
        return "ANY"
    status = found.get("tagStatus", "ANY") if isinstance(found, dict) else None
    if status not in ("ANY", "TAGGED", "UNTAGGED"):
        raise _invalid("filter.tagStatus must be one of TAGGED, UNTAGGED, ANY")
    return str(status)


def _paged(items: list[Any], document: dict[str, Any]) -> tuple[list[Any], str | None]:
    """nextToken is the index of the next item (opaque to clients)."""
    limit = document.get("maxResults")
    limit = MAX_RESULTS if limit is None else limit
    token = document.get("nextToken")
    if not isinstance(limit, int) or isinstance(limit, bool) or not 1 <= limit <= MAX_RESULTS:
        raise _invalid("maxResults must be between 1 and 1000")
    start = 0
    if token is not None:
        try:
            start = int(base64.b64decode(str(token)).decode())
        except ValueError:
            start = -1
        if start < 0:
            raise _invalid("Invalid nextToken")
    page = items[start : start + limit]
    more = start + limit < len(items)
    return page, base64.b64encode(str(start + limit).encode()).decode() if more else None


class Ecr:
    def __init__(self, request: Request, registry: Registry, principal: Principal) -> None:
        self.request = request
        self.registry = registry
        self.principal = principal
        self.settings = registry.settings

    def repository(self, row: RepositoryRow) -> dict[str, Any]:
        return {
            "repositoryArn": self.registry.arn(row.name),
            "registryId": self.settings.account_id,
            "repositoryName": row.name,
            "repositoryUri": f"{self.registry.host}/{row.name}",
            "createdAt": _epoch(row.created_at),
            "imageTagMutability": "MUTABLE",
            "imageScanningConfiguration": {"scanOnPush": False},
            "encryptionConfiguration": {"encryptionType": "AES256"},
        }

    def detail(self, name: str, row: ManifestRow) -> dict[str, Any]:
        detail: dict[str, Any] = {
            "registryId": self.settings.account_id,
            "repositoryName": name,
            "imageDigest": row.digest,
            "imageSizeInBytes": row.image_size,
            "imagePushedAt": _epoch(row.pushed_at),
            "imageManifestMediaType": row.media_type,
            "imageStatus": "ACTIVE",
        }
        if row.tags:
            detail["imageTags"] = list(row.tags)
        if row.artifact_type:
            detail["artifactMediaType"] = row.artifact_type
        if row.subject:
            detail["subjectManifestDigest"] = row.subject
        return detail

    # -- operations ------------------------------------------------------------------------------------------

    async def GetAuthorizationToken(self, document: dict[str, Any]) -> dict[str, Any]:
        credentials = self.request.app.state.services.credentials
        key = None if credentials is None else await credentials.signing_key(self.principal.access_key_id or "")
        if key is None:
            raise InternalError("The signing key vanished while issuing a registry token")
        password, expires = issue_password(key, self.settings.registry_token_ttl_s)
        token = base64.b64encode(f"AWS:{password}".encode()).decode()
        return {
            "authorizationData": [
                {
                    "authorizationToken": token,
                    "expiresAt": float(expires),
                    "proxyEndpoint": self.settings.resolved_public_url,
                }
            ]
        }

    async def CreateRepository(self, document: dict[str, Any]) -> dict[str, Any]:
        name = _string(document, "repositoryName", required=True) or ""
        row = await anyio.to_thread.run_sync(self.registry.create_repository, name)
        return {"repository": self.repository(row)}

    async def DescribeRepositories(self, document: dict[str, Any]) -> dict[str, Any]:
        names = document.get("repositoryNames")
        if names is not None:
            if not isinstance(names, list) or not names or not all(isinstance(n, str) for n in names):
                raise _invalid("repositoryNames must be a non-empty list of names")
            for name in names:
                check_repository_name(name)
        rows = await anyio.to_thread.run_sync(self.registry.repositories, names)
        page, token = _paged(rows, document)
        answer: dict[str, Any] = {"repositories": [self.repository(r) for r in page]}
        if token:
            answer["nextToken"] = token
        return answer

    async def DeleteRepository(self, document: dict[str, Any]) -> dict[str, Any]:
        name = _string(document, "repositoryName", required=True) or ""
        row = await anyio.to_thread.run_sync(self.registry.delete_repository, name, bool(document.get("force")))
        return {"repository": self.repository(row)}

    async def ListImages(self, document: dict[str, Any]) -> dict[str, Any]:
        name = _string(document, "repositoryName", required=True) or ""
        rows = await anyio.to_thread.run_sync(self.registry.images, name)
        status = _tag_status(document)
        ids: list[dict[str, str]] = []
        for row in rows:
            if row.tags and status in ("ANY", "TAGGED"):
                ids += [{"imageDigest": row.digest, "imageTag": tag} for tag in row.tags]
            elif not row.tags and status in ("ANY", "UNTAGGED"):
                ids.append({"imageDigest": row.digest})
        page, token = _paged(ids, document)
        answer: dict[str, Any] = {"imageIds": page}
        if token:
            answer["nextToken"] = token
        return answer

    async def DescribeImages(self, document: dict[str, Any]) -> dict[str, Any]:
        name = _string(document, "repositoryName", required=True) or ""
        rows = await anyio.to_thread.run_sync(self.registry.images, name)
        wanted = _image_ids(document, required=False)
        if wanted is not None:
            selected: list[ManifestRow] = []
            for image_id in wanted:
                found = self._find(rows, image_id)
                if found is None:
                    raise EcrError(
                        "ImageNotFoundException",
                        f"The image with imageId {json.dumps(image_id)} does not exist within the repository with "
                        f"name '{name}' in the registry with id '{self.settings.account_id}'",
                    )
                selected.append(found)
            rows = selected
        else:
            status = _tag_status(document)
            rows = [r for r in rows if status == "ANY" or (status == "TAGGED") == bool(r.tags)]
        page, token = _paged(rows, document)
        answer: dict[str, Any] = {"imageDetails": [self.detail(name, r) for r in page]}
        if token:
            answer["nextToken"] = token
        return answer

    async def BatchDeleteImage(self, document: dict[str, Any]) -> dict[str, Any]:
        name = _string(document, "repositoryName", required=True) or ""
        wanted = _image_ids(document, required=True) or []
        deleted: list[dict[str, str]] = []
        failures: list[dict[str, Any]] = []
        for image_id in wanted:
            rows = await anyio.to_thread.run_sync(self.registry.images, name)
            found = self._find(rows, image_id) if isinstance(image_id, dict) else None
            if not isinstance(image_id, dict) or not (image_id.get("imageDigest") or image_id.get("imageTag")):
                failures.append(
                    {
                        "imageId": image_id,
                        "failureCode": "MissingDigestAndTag",
                        "failureReason": "Missing digest and tag",
                    }
                )
                continue
            if found is None:
                failures.append(
                    {"imageId": image_id, "failureCode": "ImageNotFound", "failureReason": "Requested image not found"}
                )
                continue
            tag = image_id.get("imageTag")
            if tag and not image_id.get("imageDigest"):
                await anyio.to_thread.run_sync(self.registry.delete_manifest, name, tag)
                remaining = [
                    r for r in await anyio.to_thread.run_sync(self.registry.images, name) if r.digest == found.digest
                ]
                if remaining and not remaining[0].tags:  # ECR: deleting an image's last tag deletes the image
                    await anyio.to_thread.run_sync(self.registry.delete_manifest, name, found.digest)
                deleted.append({"imageDigest": found.digest, "imageTag": tag})
            else:
                await anyio.to_thread.run_sync(self.registry.delete_manifest, name, found.digest)
                deleted += [{"imageDigest": found.digest, "imageTag": t} for t in found.tags] or [
                    {"imageDigest": found.digest}
                ]
        return {"imageIds": deleted, "failures": failures}

    async def BatchGetImage(self, document: dict[str, Any]) -> dict[str, Any]:
        name = _string(document, "repositoryName", required=True) or ""
        rows = await anyio.to_thread.run_sync(self.registry.images, name)
        images: list[dict[str, Any]] = []
        failures: list[dict[str, Any]] = []
        for image_id in _image_ids(document, required=True) or []:
            found = self._find(rows, image_id) if isinstance(image_id, dict) else None
            if found is None:
                failures.append(
                    {"imageId": image_id, "failureCode": "ImageNotFound", "failureReason": "Requested image not found"}
                )
                continue
            stored = await anyio.to_thread.run_sync(self.registry.get_manifest, name, found.digest)
            image_id = {
                "imageDigest": found.digest,
                **({"imageTag": image_id["imageTag"]} if image_id.get("imageTag") else {}),
            }
            images.append(
                {
                    "registryId": self.settings.account_id,
                    "repositoryName": name,
                    "imageId": image_id,
                    "imageManifest": stored.body.decode(),
                    "imageManifestMediaType": stored.media_type,
                }
            )
        return {"images": images, "failures": failures}

    async def PutImage(self, document: dict[str, Any]) -> dict[str, Any]:
        name = _string(document, "repositoryName", required=True) or ""
        body = (_string(document, "imageManifest", required=True) or "").encode()
        tag, digest = _string(document, "imageTag"), _string(document, "imageDigest")
        media_type = _string(document, "imageManifestMediaType")
        self.registry.require_repository(name, ecr=True)
        actual = "sha256:" + hashlib.sha256(body).hexdigest()
        if digest is not None and digest != actual:
            raise EcrError("ImageDigestDoesNotMatchException", f"The imageDigest {digest[:80]} does not match {actual}")
        stored = await anyio.to_thread.run_sync(self.registry.put_manifest, name, tag or actual, body, media_type)
        image_id = {"imageDigest": stored, **({"imageTag": tag} if tag else {})}
        manifest = await anyio.to_thread.run_sync(self.registry.get_manifest, name, stored)
        return {
            "image": {
                "registryId": self.settings.account_id,
                "repositoryName": name,
                "imageId": image_id,
                "imageManifest": body.decode(),
                "imageManifestMediaType": manifest.media_type,
            }
        }

    @staticmethod
    def _find(rows: list[ManifestRow], image_id: dict[str, Any]) -> ManifestRow | None:
        digest, tag = image_id.get("imageDigest"), image_id.get("imageTag")
        if digest is None and tag is None:
            return None
        for row in rows:
            if (digest is None or row.digest == digest) and (tag is None or tag in row.tags):
                return row
        return None


OPERATIONS: dict[str, Callable[..., Any]] = {
    name: getattr(Ecr, name)
    for name in (
        "GetAuthorizationToken",
        "CreateRepository",
        "DescribeRepositories",
        "DeleteRepository",
        "ListImages",
        "DescribeImages",
        "BatchDeleteImage",
        "BatchGetImage",
        "PutImage",
    )
}


async def ecr(request: Request, params: dict[str, str]) -> Response:
    request_id = getattr(request.state, "request_id", "")
    target = request.headers.get("x-amz-target", "")
    if target.startswith(logs_api.TARGET_PREFIX):  # CloudWatch Logs shares POST / (gateway/logs_api.py)
        return await logs_api.logs(request, params)
    try:
        if not target.startswith(TARGET_PREFIX):
            raise EcrError("UnknownOperationException", "Unknown operation: X-Amz-Target is not an ECR operation", 400)
        operation = OPERATIONS.get(target[len(TARGET_PREFIX) :])
        if operation is None:
            raise EcrError(
                "UnknownOperationException", f"Operation {target[len(TARGET_PREFIX) :][:100]} is not supported"
            )
        body = await read_capped_body(request, MAX_BODY)
        services = request.app.state.services
        principal = await authn.authenticate_sigv4(request, services, hashlib.sha256(body).hexdigest())
        try:
            document = json.loads(body or b"{}")
            json.dumps(document, ensure_ascii=False).encode()  # a lone surrogate is valid JSON but not text
        except (ValueError, RecursionError):  # RecursionError: nesting deeper than the parser's stack
            raise EcrError("SerializationException", "The request body is not JSON text") from None
        if not isinstance(document, dict):
            raise EcrError("SerializationException", "The request body is not a JSON object")
        registry_id = document.get("registryId")
        if registry_id is not None and registry_id != services.settings.account_id:
            raise _invalid(
                f"registryId {str(registry_id)[:20]!r} is not this registry ({services.settings.account_id})"
            )
        answer = await operation(Ecr(request, services.registry, principal), document)
        return _answer(answer)
    except RegistryError as exc:
        code = _REGISTRY_CODES.get(exc.oci_code, "InvalidParameterException")
        return _fail(EcrError(code, exc.message), request_id)
    except HangarError as exc:
        return _fail(exc, request_id)


ROUTES = [Route("POST", "/", ecr, name="EcrJsonProtocol", auth="custom")]
