"""The OCI distribution API (``/v2/...``) of Hangar's registry, on the server's own port.

Clients authenticate as they do against ECR: HTTP Basic with user ``AWS`` and the password from
GetAuthorizationToken (``aws ecr get-login-password``). That password is ``hgr1.<payload>.<mac>``: the payload
names an access key and an expiry, the MAC is HMAC-SHA256 under that key's secret, so it expires, and it dies with
the key. A request without it gets 401 with ``WWW-Authenticate: Basic`` (docker, podman, buildah, skopeo and oras
then send the credentials they were given). Errors are the distribution spec's ``{"errors": [...]}``.

Blob bytes stream to an upload file; a blob enters the store only under its verified digest (see
``artifacts/images/blobs.py``). ``POST /hangar/images/gc/`` (SigV4) runs garbage collection.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import hashlib
import hmac
import json
import re
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import anyio.to_thread
from starlette.requests import ClientDisconnect, Request
from starlette.responses import FileResponse, JSONResponse, Response

from hangar.artifacts.images.blobs import check_digest
from hangar.artifacts.images.errors import RegistryError
from hangar.artifacts.images.manifests import MAX_MANIFEST_BYTES
from hangar.auth.credentials import SigningKey
from hangar.control.registry import ECR_REPOSITORY, Registry
from hangar.domain.errors import HangarError, NotFoundError, ValidationError
from hangar.gateway.app import read_capped_body
from hangar.gateway.routing import Route

API_VERSION = {"Docker-Distribution-API-Version": "registry/2.0"}
TOKEN_PREFIX = "hgr1"
_RANGE = re.compile(r"^(?:bytes[ =])?(\d+)-(\d+)$")
_upload_locks: dict[str, asyncio.Lock] = {}

Handler = Callable[[Request, dict[str, str]], Awaitable[Response]]


# -- the password -----------------------------------------------------------------------------------------------


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def issue_password(key: SigningKey, ttl_s: int, now: float | None = None) -> tuple[str, int]:
    """A registry password bound to ``key``: (password, expiry as epoch seconds)."""
    expires = int((now or time.time()) + ttl_s)
    payload = _b64(json.dumps({"k": key.access_key_id, "e": expires}, separators=(",", ":")).encode())
    mac = hmac.new(key.secret.encode(), f"{TOKEN_PREFIX}.{payload}".encode(), hashlib.sha256).digest()
    return f"{TOKEN_PREFIX}.{payload}.{_b64(mac)}", expires


async def _check_password(request: Request, password: str) -> bool:
    prefix, _, rest = password.partition(".")
    payload, _, mac = rest.partition(".")
    if prefix != TOKEN_PREFIX or not payload or not mac:
        return False
    try:
        claims = json.loads(_unb64(payload))
        key_id, expires = str(claims["k"]), int(claims["e"])
        given = _unb64(mac)
    except (ValueError, KeyError, TypeError, binascii.Error, RecursionError):
        return False
    if expires < time.time():
        return False
    credentials = request.app.state.services.credentials
    key = None if credentials is None else await credentials.signing_key(key_id)
    if key is None:
        return False
    expected = hmac.new(key.secret.encode(), f"{TOKEN_PREFIX}.{payload}".encode(), hashlib.sha256).digest()
    return hmac.compare_digest(expected, given)


async def _authenticated(request: Request) -> bool:
    header = request.headers.get("authorization", "")
    scheme, _, value = header.strip().partition(" ")
    if scheme.lower() == "basic":
        try:
            user, _, password = base64.b64decode(value.strip(), validate=True).decode().partition(":")
        except (ValueError, UnicodeDecodeError, binascii.Error):
            return False
        return user == "AWS" and await _check_password(request, password)
    if scheme.lower() == "bearer":
        return await _check_password(request, value.strip())
    return False


# -- plumbing ----------------------------------------------------------------------------------------------------


def _error(code: str, message: str, status: int, headers: dict[str, str] | None = None) -> Response:
    body = {"errors": [{"code": code, "message": message, "detail": None}]}
    return JSONResponse(body, status_code=status, headers={**API_VERSION, **(headers or {})})


def _registry(request: Request) -> Registry:
    registry: Registry = request.app.state.services.registry
    return registry


def registry_route(handler: Handler) -> Handler:
    """Authenticate, then run ``handler`` off the error tree: every failure is an OCI error body."""

    async def wrapped(request: Request, params: dict[str, str]) -> Response:
        if not await _authenticated(request):
            realm = f'Basic realm="{request.url.scheme}://{request.url.netloc}/v2/",service="hangar"'
            return _error("UNAUTHORIZED", "authentication required", 401, {"WWW-Authenticate": realm})
        name = params.get("name")
        if name is not None and not (len(name) <= 256 and ECR_REPOSITORY.match(name)):
            return _error("NAME_INVALID", "invalid repository name", 400)
        try:
            response = await handler(request, params)
        except RegistryError as exc:
            return _error(exc.oci_code, exc.message, exc.status)
        except NotFoundError as exc:
            return _error("NAME_UNKNOWN", exc.message, 404)
        except HangarError as exc:
            return _error("UNSUPPORTED" if exc.status < 500 else "UNKNOWN", exc.message, exc.status)
        except ClientDisconnect:
            return Response(status_code=400)
        response.headers.update(API_VERSION)
        return response

    return wrapped


def _location(name: str, kind: str, ident: str) -> str:
    return f"/v2/{name}/{kind}/{ident}"


def _upload_headers(name: str, upload_id: str, offset: int) -> dict[str, str]:
    return {
        "Location": _location(name, "blobs/uploads", upload_id),
        "Range": f"0-{max(offset - 1, 0)}",
        "Docker-Upload-UUID": upload_id,
        "Content-Length": "0",
    }


async def _append(request: Request, registry: Registry, upload: Path, offset: int) -> int:
    """Stream the request body onto the upload file; refuses past the image size limit."""
    limit = registry.settings.image_max_bytes
    size = offset
    with upload.open("ab") as out:
        async for chunk in request.stream():
            size += len(chunk)
            if size > limit:
                raise RegistryError("SIZE_INVALID", f"blob exceeds the image limit of {limit} bytes", 413)
            if chunk:
                await anyio.to_thread.run_sync(out.write, chunk)
    return size


# -- handlers ----------------------------------------------------------------------------------------------------


@registry_route
async def base(request: Request, params: dict[str, str]) -> Response:
    return JSONResponse({})


@registry_route
async def blob_get(request: Request, params: dict[str, str]) -> Response:
    registry, name, digest = _registry(request), params["name"], check_digest(params["digest"])
    if not registry.has_blob(name, digest):
        raise RegistryError("BLOB_UNKNOWN", f"blob unknown to registry: {digest}", 404)
    headers = {"Docker-Content-Digest": digest}
    if request.method == "HEAD":
        size = registry.blobs.size(digest)
        return Response(headers={**headers, "Content-Length": str(size)}, media_type="application/octet-stream")
    return FileResponse(registry.blobs.path(digest), media_type="application/octet-stream", headers=headers)


@registry_route
async def blob_delete(request: Request, params: dict[str, str]) -> Response:
    registry, name, digest = _registry(request), params["name"], check_digest(params["digest"])
    if not registry.has_blob(name, digest):
        raise RegistryError("BLOB_UNKNOWN", f"blob unknown to registry: {digest}", 404)
    return Response(status_code=202, headers={"Content-Length": "0"})  # unreferenced blobs go at the next GC


@registry_route
async def upload_start(request: Request, params: dict[str, str]) -> Response:
    registry, name = _registry(request), params["name"]
    registry.require_repository(name)
    query = request.query_params
    mount = query.get("mount")
    if mount and registry.blobs.exists(check_digest(mount)):
        return Response(
            status_code=201,
            headers={
                "Location": _location(name, "blobs", mount),
                "Docker-Content-Digest": mount,
                "Content-Length": "0",
            },
        )
    upload_id = registry.blobs.start_upload()
    digest = query.get("digest")
    if digest:
        check_digest(digest)
        upload = registry.blobs.upload_path(upload_id)
        try:
            await _append(request, registry, upload, 0)
            await anyio.to_thread.run_sync(registry.blobs.finish_upload, upload_id, digest)
        finally:
            upload.unlink(missing_ok=True)
        headers = {"Location": _location(name, "blobs", digest), "Docker-Content-Digest": digest}
        return Response(status_code=201, headers={**headers, "Content-Length": "0"})
    return Response(status_code=202, headers=_upload_headers(name, upload_id, 0))


def _lock(upload_id: str) -> asyncio.Lock:
    return _upload_locks.setdefault(upload_id, asyncio.Lock())


@registry_route
async def upload_status(request: Request, params: dict[str, str]) -> Response:
    registry, name, upload_id = _registry(request), params["name"], params["uuid"]
    offset = registry.blobs.upload_offset(upload_id)
    return Response(status_code=204, headers=_upload_headers(name, upload_id, offset))


@registry_route
async def upload_patch(request: Request, params: dict[str, str]) -> Response:
    registry, name, upload_id = _registry(request), params["name"], params["uuid"]
    registry.blobs.upload_path(upload_id)  # unknown sessions are refused before they get a lock
    async with _lock(upload_id):
        upload = registry.blobs.upload_path(upload_id)
        offset = upload.stat().st_size
        content_range = request.headers.get("content-range")
        if content_range:
            found = _RANGE.match(content_range.strip())
            if found is None or int(found.group(1)) != offset or int(found.group(2)) < int(found.group(1)):
                return _error(
                    "BLOB_UPLOAD_INVALID",
                    f"Content-Range {content_range[:100]!r} does not continue the upload at offset {offset}",
                    416,
                    {"Range": f"0-{max(offset - 1, 0)}", "Location": _location(name, "blobs/uploads", upload_id)},
                )
        try:
            size = await _append(request, registry, upload, offset)
        except RegistryError:
            registry.blobs.cancel_upload(upload_id)
            _upload_locks.pop(upload_id, None)
            raise
        if content_range and found is not None and size != int(found.group(2)) + 1:
            return _error("BLOB_UPLOAD_INVALID", "the chunk's length does not match its Content-Range", 416)
    return Response(status_code=202, headers=_upload_headers(name, upload_id, size))


@registry_route
async def upload_put(request: Request, params: dict[str, str]) -> Response:
    registry, name, upload_id = _registry(request), params["name"], params["uuid"]
    digest = request.query_params.get("digest")
    if not digest:
        raise RegistryError("DIGEST_INVALID", "the digest query parameter is required to complete an upload")
    check_digest(digest)
    try:
        async with _lock(upload_id):
            upload = registry.blobs.upload_path(upload_id)
            try:
                await _append(request, registry, upload, upload.stat().st_size)
            except RegistryError:
                registry.blobs.cancel_upload(upload_id)
                raise
            await anyio.to_thread.run_sync(registry.blobs.finish_upload, upload_id, digest)
    finally:
        _upload_locks.pop(upload_id, None)  # the session ends here, completed or not
    headers = {"Location": _location(name, "blobs", digest), "Docker-Content-Digest": digest, "Content-Length": "0"}
    return Response(status_code=201, headers=headers)


@registry_route
async def upload_delete(request: Request, params: dict[str, str]) -> Response:
    _registry(request).blobs.cancel_upload(params["uuid"])
    _upload_locks.pop(params["uuid"], None)
    return Response(status_code=204)


@registry_route
async def manifest_get(request: Request, params: dict[str, str]) -> Response:
    registry, name, reference = _registry(request), params["name"], params["reference"]
    found = await anyio.to_thread.run_sync(registry.get_manifest, name, reference)
    headers = {"Docker-Content-Digest": found.digest, "Content-Length": str(len(found.body))}
    body = b"" if request.method == "HEAD" else found.body
    return Response(body, headers=headers, media_type=found.media_type)


@registry_route
async def manifest_put(request: Request, params: dict[str, str]) -> Response:
    registry, name, reference = _registry(request), params["name"], params["reference"]
    body = await read_capped_body(request, MAX_MANIFEST_BYTES)
    content_type = request.headers.get("content-type")
    digest = await anyio.to_thread.run_sync(registry.put_manifest, name, reference, body, content_type)
    headers = {"Location": _location(name, "manifests", digest), "Docker-Content-Digest": digest}
    return Response(status_code=201, headers={**headers, "Content-Length": "0"})


@registry_route
async def manifest_delete(request: Request, params: dict[str, str]) -> Response:
    registry, name, reference = _registry(request), params["name"], params["reference"]
    await anyio.to_thread.run_sync(registry.delete_manifest, name, reference)
    return Response(status_code=202, headers={"Content-Length": "0"})


@registry_route
async def tags_list(request: Request, params: dict[str, str]) -> Response:
    registry, name = _registry(request), params["name"]
    tags = await anyio.to_thread.run_sync(registry.tags, name)
    last = request.query_params.get("last")
    if last:
        tags = [t for t in tags if t > last]
    count = request.query_params.get("n")
    headers: dict[str, str] = {}
    if count and count.isdigit() and int(count) < len(tags):
        tags = tags[: int(count)]
        headers["Link"] = f'</v2/{name}/tags/list?n={count}&last={tags[-1]}>; rel="next"' if tags else ""
    return JSONResponse({"name": name, "tags": tags}, headers=headers)


async def collect_garbage(request: Request, params: dict[str, str]) -> Response:
    """Operator call (SigV4): delete blobs, layers and rootfs trees that nothing references and that are older than
    ``?graceSeconds=`` (default 600)."""
    grace = request.query_params.get("graceSeconds", "600")
    if not grace.isdigit():
        raise ValidationError("graceSeconds must be a non-negative integer")
    result = await anyio.to_thread.run_sync(_registry(request).collect_garbage, float(grace))
    return JSONResponse({"removed": result})


ROUTES = [
    Route("GET", "/v2/", base, name="RegistryBase", auth="custom"),
    Route("GET", "/v2", base, name="RegistryBaseNoSlash", auth="custom"),
    Route("POST", "/v2/{name+}/blobs/uploads/", upload_start, name="RegistryUploadStart", auth="custom"),
    Route("POST", "/v2/{name+}/blobs/uploads", upload_start, name="RegistryUploadStartNoSlash", auth="custom"),
    Route("GET", "/v2/{name+}/blobs/uploads/{uuid}", upload_status, name="RegistryUploadStatus", auth="custom"),
    Route("PATCH", "/v2/{name+}/blobs/uploads/{uuid}", upload_patch, name="RegistryUploadPatch", auth="custom"),
    Route("PUT", "/v2/{name+}/blobs/uploads/{uuid}", upload_put, name="RegistryUploadPut", auth="custom"),
    Route("DELETE", "/v2/{name+}/blobs/uploads/{uuid}", upload_delete, name="RegistryUploadCancel", auth="custom"),
    Route("GET", "/v2/{name+}/blobs/{digest}", blob_get, name="RegistryBlob", auth="custom"),
    Route("DELETE", "/v2/{name+}/blobs/{digest}", blob_delete, name="RegistryBlobDelete", auth="custom"),
    Route("GET", "/v2/{name+}/manifests/{reference}", manifest_get, name="RegistryManifest", auth="custom"),
    Route("PUT", "/v2/{name+}/manifests/{reference}", manifest_put, name="RegistryManifestPut", auth="custom"),
    Route("DELETE", "/v2/{name+}/manifests/{reference}", manifest_delete, name="RegistryManifestDelete", auth="custom"),
    Route("GET", "/v2/{name+}/tags/list", tags_list, name="RegistryTags", auth="custom"),
    Route("POST", "/hangar/images/gc/", collect_garbage, name="ImagesCollectGarbage"),
]
