"""A minimal S3 (path-style) for the artifact store, so ``aws s3``, boto3 and ``hangar upload`` can put code here.

Operations: CreateBucket ``PUT /{bucket}``, HeadBucket, ListObjectsV2 ``GET /{bucket}?list-type=2`` and ListObjects
(``GET /{bucket}``), PutObject ``PUT /{bucket}/{key+}`` (streamed to disk, at most 250 MB), GetObject/HeadObject
(ranges, ``versionId``) and DeleteObject. Everything else answers ``NotImplemented``. Errors are S3's XML, which
botocore's S3 parser reads.

Requests are SigV4-signed for service ``s3``. The signature covers the declared ``x-amz-content-sha256``, so it is
verified before the body is read; the body's real sha256 is compared with the declared one after streaming it to a
temporary file, which is deleted on any mismatch. These routes come last: AWS API routes always win, a first
path segment that belongs to the API is never a bucket, and a request not signed for ``s3`` (a probe, a mistyped
API call) gets the gateway's usual JSON 404, never an S3 answer.
"""

from __future__ import annotations

import base64
import hashlib
import logging
import re
import zlib
from collections.abc import Awaitable, Callable, Iterator
from datetime import UTC, datetime
from email.utils import formatdate
from pathlib import Path
from urllib.parse import quote
from xml.sax.saxutils import escape, unescape

import anyio.to_thread
from starlette.requests import ClientDisconnect, Request
from starlette.responses import FileResponse, Response

from hangar.artifacts.limits import MAX_ZIPPED_BYTES
from hangar.artifacts.multipart import MultipartUploads
from hangar.artifacts.store import RESERVED_BUCKETS, ArtifactStore, StoredObject, StoreError
from hangar.config import Settings
from hangar.domain.errors import HangarError, NotFoundError, ValidationError
from hangar.gateway import authn
from hangar.gateway.app import read_capped_body
from hangar.gateway.errors import DISK_FULL, disk_full
from hangar.gateway.routing import Route

log = logging.getLogger("hangar.artifacts")
UNSIGNED_PAYLOAD = "UNSIGNED-PAYLOAD"
S3_NAMESPACE = "http://s3.amazonaws.com/doc/2006-03-01/"
MAX_LIST_KEYS = 1000
# Query names that select another bucket operation than ListObjects (none of them is implemented here).
BUCKET_SUBRESOURCES = frozenset(
    {
        "accelerate",
        "acl",
        "analytics",
        "cors",
        "delete",
        "encryption",
        "intelligent-tiering",
        "inventory",
        "lifecycle",
        "location",
        "logging",
        "metadataTable",
        "metrics",
        "notification",
        "object-lock",
        "ownershipControls",
        "policy",
        "policyStatus",
        "publicAccessBlock",
        "replication",
        "requestPayment",
        "session",
        "tagging",
        "uploads",
        "versioning",
        "versions",
        "website",
    }
)
CHUNK_CHECKSUMS = ("x-amz-checksum-crc32", "x-amz-checksum-sha256")
MAX_COMPLETE_BODY = 2 * 1024 * 1024  # CompleteMultipartUpload lists at most 10,000 parts
_PART = re.compile(r"<Part>(.*?)</Part>", re.DOTALL)
_PART_NUMBER = re.compile(r"<PartNumber>\s*(\d{1,5})\s*</PartNumber>")
_PART_ETAG = re.compile(r"<ETag>([^<]*)</ETag>")
# Characters XML 1.0 cannot carry even escaped (control characters, lone surrogates): a parser rejects the document.
_NOT_XML = re.compile("[^\t\n\r\u0020-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]")
# How Hangar's auth errors read in S3's vocabulary (botocore and the aws CLI print the S3 code).
_AUTH_CODES = {
    "InvalidSignatureException": "SignatureDoesNotMatch",
    "UnrecognizedClientException": "InvalidAccessKeyId",
    "MissingAuthenticationTokenException": "AccessDenied",
    "IncompleteSignatureException": "AuthorizationHeaderMalformed",
    "AccessDeniedException": "AccessDenied",
}


# -- handlers ----------------------------------------------------------------------------------------------


async def create_bucket(request: Request, params: dict[str, str]) -> Response:
    bucket = params["bucket"]
    if request.url.path.endswith("/"):
        _s3_only(request, bucket)  # "PUT /runtimes/" and friends are API paths, never CreateBucket
    else:
        _s3_only(request, bucket, check_name=False)  # a reserved name is refused in S3's terms below
    return await _s3(request, bucket, None, _create_bucket)


async def bucket_get(request: Request, params: dict[str, str]) -> Response:
    bucket = params["bucket"]
    _s3_only(request, bucket)
    return await _s3(request, bucket, None, _bucket_get)


async def object_put(request: Request, params: dict[str, str]) -> Response:
    _s3_only(request, params["bucket"])
    return await _s3(request, params["bucket"], params["key"], _put_object)


async def object_get(request: Request, params: dict[str, str]) -> Response:
    _s3_only(request, params["bucket"])
    return await _s3(request, params["bucket"], params["key"], _get_object)


async def object_post(request: Request, params: dict[str, str]) -> Response:
    _s3_only(request, params["bucket"])
    return await _s3(request, params["bucket"], params["key"], _post_object)


async def object_delete(request: Request, params: dict[str, str]) -> Response:
    _s3_only(request, params["bucket"])
    return await _s3(request, params["bucket"], params["key"], _delete_object)


async def not_implemented(request: Request, params: dict[str, str]) -> Response:
    _s3_only(request, params["bucket"])
    return await _s3(request, params["bucket"], params.get("key"), _not_implemented)


# -- operations --------------------------------------------------------------------------------------------


async def _create_bucket(request: Request, store: ArtifactStore, bucket: str, _key: str | None) -> Response:
    if bucket in _api_prefixes(request):
        raise StoreError("InvalidBucketName", f"The bucket name {bucket!r} is reserved: it is a Hangar API path.", 400)
    store.create_bucket(bucket)
    return Response(status_code=200, headers={"Location": f"/{bucket}"})


async def _bucket_get(request: Request, store: ArtifactStore, bucket: str, _key: str | None) -> Response:
    if request.method == "HEAD":
        store.bucket_dir(bucket)
        return Response(status_code=200, headers={"x-amz-bucket-region": _settings(request).region})
    if request.query_params.get("list-type") == "2":
        return _list_objects_v2(request, store, bucket)
    subresources = BUCKET_SUBRESOURCES.intersection(request.query_params.keys())
    if subresources:
        raise StoreError("NotImplemented", f"GET ?{min(subresources)} is not implemented for buckets.", 501)
    return _list_objects_v1(request, store, bucket)  # a GET with no subresource is ListObjects, as in S3


async def _put_object(request: Request, store: ArtifactStore, bucket: str, key: str | None) -> Response:
    """PutObject, and UploadPart when the query names an upload."""
    object_key = _require_key(key)
    if "x-amz-copy-source" in request.headers:
        raise StoreError("NotImplemented", "CopyObject is not implemented; upload the object itself.", 501)
    if "aws-chunked" in request.headers.get("content-encoding", ""):
        raise StoreError("NotImplemented", "aws-chunked uploads are not implemented; send a plain body.", 501)
    length = _content_length(request)
    query = request.query_params
    uploads = MultipartUploads(store)
    part = None
    if "uploadId" in query or "partNumber" in query:
        part = uploads.room_for_part(bucket, object_key, query.get("uploadId", ""), query.get("partNumber", ""), length)
    else:
        store.object_path(bucket, object_key)  # NoSuchBucket / bad key before a byte is read
    received = store.new_upload()
    try:
        sha256 = await _receive(request, received, length)
        if part is not None:
            headers = {"ETag": uploads.put_part(part, received, sha256)}
        else:
            version_id = store.put(bucket, object_key, received, sha256)
            headers = {"ETag": f'"{version_id}"', "x-amz-version-id": version_id}
    finally:
        received.unlink(missing_ok=True)
    for name in CHUNK_CHECKSUMS:
        if name in request.headers:
            headers[name] = request.headers[name]
    return Response(status_code=200, headers=headers)


async def _post_object(request: Request, store: ArtifactStore, bucket: str, key: str | None) -> Response:
    """CreateMultipartUpload (``?uploads``) and CompleteMultipartUpload (``?uploadId=``)."""
    object_key = _require_key(key)
    uploads = MultipartUploads(store)
    fields = f"<Bucket>{escape(bucket)}</Bucket><Key>{escape(object_key)}</Key>"
    if "uploads" in request.query_params:
        upload_id: str | None = uploads.create(bucket, object_key)
        return _xml("InitiateMultipartUploadResult", f"{fields}<UploadId>{upload_id}</UploadId>")
    upload_id = request.query_params.get("uploadId")
    if upload_id is None:  # no S3 operation is a POST on an object without one of these: S3 answers 405
        raise StoreError("MethodNotAllowed", "POST on an object needs '?uploads' or '?uploadId='.", 405)
    body = await read_capped_body(request, MAX_COMPLETE_BODY)
    request.state.body_read = True
    declared = request.headers.get("x-amz-content-sha256", UNSIGNED_PAYLOAD)
    if declared != UNSIGNED_PAYLOAD and declared != hashlib.sha256(body).hexdigest():
        raise StoreError("XAmzContentSHA256Mismatch", "The body does not match 'x-amz-content-sha256'.", 400)
    parts = _listed_parts(body.decode("utf-8", "replace"))
    version_id = await anyio.to_thread.run_sync(uploads.complete, bucket, object_key, upload_id, parts)
    location = f"<Location>/{escape(bucket)}/{escape(object_key)}</Location>"
    response = _xml("CompleteMultipartUploadResult", f'{location}{fields}<ETag>"{version_id}"</ETag>')
    response.headers["x-amz-version-id"] = version_id
    return response


async def _get_object(request: Request, store: ArtifactStore, bucket: str, key: str | None) -> Response:
    version_id = request.query_params.get("versionId")
    stored = store.get(bucket, _require_key(key), version_id)
    version_id = version_id or _current_version(store, bucket, stored)
    headers = {"ETag": _etag(store, bucket, stored), "Last-Modified": formatdate(stored.mtime, usegmt=True)}
    if version_id:
        headers["x-amz-version-id"] = version_id
    return FileResponse(stored.path, headers=headers, media_type="application/octet-stream")


async def _delete_object(request: Request, store: ArtifactStore, bucket: str, key: str | None) -> Response:
    """DeleteObject, and AbortMultipartUpload when the query names an upload."""
    upload_id = request.query_params.get("uploadId")
    if upload_id is not None:
        MultipartUploads(store).abort(bucket, _require_key(key), upload_id)
        return Response(status_code=204)
    store.delete(bucket, _require_key(key))
    return Response(status_code=204)


async def _not_implemented(request: Request, store: ArtifactStore, bucket: str, key: str | None) -> Response:
    raise StoreError("NotImplemented", f"{request.method} with these parameters is not implemented here.", 501)


# -- request plumbing --------------------------------------------------------------------------------------


Operation = Callable[[Request, ArtifactStore, str, "str | None"], Awaitable[Response]]


async def _s3(request: Request, bucket: str, key: str | None, operation: Operation) -> Response:
    """Authenticate, run one operation, render any failure as S3 XML."""
    resource = f"/{bucket}/{key}" if key else f"/{bucket}"
    try:
        declared = request.headers.get("x-amz-content-sha256", UNSIGNED_PAYLOAD)
        services = request.app.state.services
        request.state.principal = await authn.authenticate_sigv4(request, services, declared)
        store = ArtifactStore(services.settings.resolved_artifacts_dir)
        return await operation(request, store, bucket, key)
    except HangarError as exc:
        return _error(request, exc, resource)
    except OSError as exc:
        if not disk_full(exc):
            raise
        log.error("out of disk space in %s %s: %s", request.method, resource, exc)
        return _error(request, StoreError("InternalError", DISK_FULL, 500), resource)


def _s3_only(request: Request, bucket: str, *, check_name: bool = True) -> None:
    """Step aside unless this is an S3 request: signed for service ``s3`` (header or presigned query), and not on
    a path of Hangar's own API. Otherwise answer exactly as the gateway does when no route matches (405-style
    ValidationError when another method of that path exists, else 404), so a mistyped API call or an unsigned
    probe never gets an S3 answer."""
    api_path = check_name and (bucket in RESERVED_BUCKETS or bucket in _api_prefixes(request))
    if _signed_for_s3(request) and not api_path:
        return
    path = request.scope.get("raw_path", b"").decode("latin-1").split("?", 1)[0] or request.url.path
    if any(route.match(path) is not None for route in _api_routes(request)):
        raise ValidationError(f"Method {request.method} is not allowed on {path}", reason="CannotParse")
    raise NotFoundError(f"No operation matches {request.method} {path}")


def _signed_for_s3(request: Request) -> bool:
    credential = request.query_params.get("X-Amz-Credential", "")
    authorization = request.headers.get("authorization", "")
    if "Credential=" in authorization:
        credential = authorization.split("Credential=", 1)[1].split(",", 1)[0]
    return credential.strip().endswith("/s3/aws4_request")


def _api_routes(request: Request) -> list[Route]:
    return [route for route in request.app.table.routes if not route.name.startswith("S3")]


def _api_prefixes(request: Request) -> set[str]:
    prefixes = set()
    for route in _api_routes(request):
        first = route.template.lstrip("/").split("/", 1)[0]
        if first and not first.startswith("{"):
            prefixes.add(first)
    return prefixes


def _content_length(request: Request) -> int:
    raw = request.headers.get("content-length")
    if raw is None or not raw.isdigit():
        raise StoreError("MissingContentLength", "You must provide the Content-Length HTTP header.", 411)
    length = int(raw)
    if length > MAX_ZIPPED_BYTES:
        raise StoreError(
            "EntityTooLarge",
            f"Your proposed upload of {length} bytes exceeds the maximum allowed size of {MAX_ZIPPED_BYTES} bytes.",
            400,
        )
    return length


async def _receive(request: Request, upload: Path, length: int) -> str:
    """Stream the body into ``upload``; check its length, declared sha256 and any CRC32/SHA256 checksum.
    Returns the body's sha256 (hex)."""
    sha256 = hashlib.sha256()
    crc32 = 0
    size = 0
    with open(upload, "wb") as out:
        try:
            async for chunk in request.stream():
                size += len(chunk)
                if size > length:
                    raise StoreError("IncompleteBody", "The body is longer than its Content-Length.", 400)
                sha256.update(chunk)
                crc32 = zlib.crc32(chunk, crc32)
                out.write(chunk)
        except ClientDisconnect:
            raise StoreError("IncompleteBody", "The client went away before sending the whole body.", 400) from None
    request.state.body_read = True
    if size != length:
        raise StoreError("IncompleteBody", "You did not provide the number of bytes specified by Content-Length.", 400)
    declared = request.headers.get("x-amz-content-sha256", UNSIGNED_PAYLOAD)
    if declared != UNSIGNED_PAYLOAD and declared != sha256.hexdigest():
        raise StoreError(
            "XAmzContentSHA256Mismatch", "The provided 'x-amz-content-sha256' header does not match the body.", 400
        )
    expected = {
        "x-amz-checksum-crc32": base64.b64encode(crc32.to_bytes(4, "big")).decode(),
        "x-amz-checksum-sha256": base64.b64encode(sha256.digest()).decode(),
    }
    for name, value in expected.items():
        if name in request.headers and request.headers[name] != value:
            raise StoreError("BadDigest", f"The {name[15:].upper()} you specified did not match the body.", 400)
    return sha256.hexdigest()


def _listed_parts(body: str) -> list[tuple[int, str]]:
    """(PartNumber, ETag) of each <Part> of a CompleteMultipartUpload body, the ETag without its quotes."""
    parts: list[tuple[int, str]] = []
    for block in _PART.findall(body):
        number, etag = _PART_NUMBER.search(block), _PART_ETAG.search(block)
        if number is None or etag is None:
            raise StoreError("MalformedXML", "Each <Part> needs a <PartNumber> and an <ETag>.", 400)
        parts.append((int(number.group(1)), unescape(etag.group(1), {"&quot;": '"'}).strip('"')))
    return parts


def _require_key(key: str | None) -> str:
    if not key:
        raise StoreError("InvalidArgument", "This operation needs an object key.", 400)
    return key


def _current_version(store: ArtifactStore, bucket: str, stored: StoredObject) -> str | None:
    """The version id of the current object: the version file sharing its inode (None if put there by hand)."""
    for candidate in store.version_files(bucket, stored.key):
        if candidate.stat().st_ino == stored.path.stat().st_ino:
            return candidate.name
    return None


def _etag(store: ArtifactStore, bucket: str, stored: StoredObject) -> str:
    version_id = _current_version(store, bucket, stored)
    if version_id is not None:
        return f'"{version_id}"'
    return f'"{hashlib.sha256(f"{stored.path}:{stored.size}:{stored.mtime}".encode()).hexdigest()[:32]}"'


def _settings(request: Request) -> Settings:
    settings: Settings = request.app.state.services.settings
    return settings


# -- ListObjectsV2 -----------------------------------------------------------------------------------------


def _max_keys(request: Request) -> int:
    raw_max = request.query_params.get("max-keys", str(MAX_LIST_KEYS))
    if not raw_max.isdigit():
        raise StoreError("InvalidArgument", "max-keys must be a non-negative integer.", 400)
    return min(int(raw_max), MAX_LIST_KEYS)


def _page(
    store: ArtifactStore, bucket: str, prefix: str, delimiter: str, after: str, max_keys: int
) -> tuple[list[StoredObject], list[str], bool, str]:
    """One page of a listing: (objects, common prefixes, truncated, the last key or prefix on the page)."""
    contents: list[StoredObject] = []
    prefixes: list[str] = []
    truncated = False
    last = ""
    for item, common in _listing(store, bucket, prefix, delimiter, after):
        if len(contents) + len(prefixes) >= max_keys:
            truncated = True
            break
        if common:
            prefixes.append(common)
            last = common
        else:
            contents.append(item)
            last = item.key
    return contents, prefixes, truncated, last


def _entries(store: ArtifactStore, bucket: str, contents: list[StoredObject], prefixes: list[str], url: bool) -> str:
    parts = [
        "<Contents>"
        + _field("Key", item.key, url)
        + f"<LastModified>{_iso(item.mtime)}</LastModified><ETag>{escape(_etag(store, bucket, item))}</ETag>"
        + f"<Size>{item.size}</Size><StorageClass>STANDARD</StorageClass></Contents>"
        for item in contents
    ]
    parts += ["<CommonPrefixes>" + _field("Prefix", common, url) + "</CommonPrefixes>" for common in prefixes]
    return "".join(parts)


def _list_objects_v2(request: Request, store: ArtifactStore, bucket: str) -> Response:
    query = request.query_params
    prefix = query.get("prefix", "")
    delimiter = query.get("delimiter", "")
    token = query.get("continuation-token")
    start_after = query.get("start-after", "")
    max_keys = _max_keys(request)
    after = _decode_token(token) if token else start_after
    url = query.get("encoding-type") == "url"
    contents, prefixes, truncated, last = _page(store, bucket, prefix, delimiter, after, max_keys)
    parts = [
        f"<Name>{bucket}</Name>",
        _field("Prefix", prefix, url),
        f"<KeyCount>{len(contents) + len(prefixes)}</KeyCount><MaxKeys>{max_keys}</MaxKeys>",
        _field("Delimiter", delimiter, url) if delimiter else "",
        f"<IsTruncated>{'true' if truncated else 'false'}</IsTruncated>",
        f"<ContinuationToken>{_text(token)}</ContinuationToken>" if token else "",
        _field("StartAfter", start_after, url) if start_after else "",
        f"<NextContinuationToken>{_encode_token(last)}</NextContinuationToken>" if truncated else "",
        "<EncodingType>url</EncodingType>" if url else "",
        _entries(store, bucket, contents, prefixes, url),
    ]
    return _xml("ListBucketResult", "".join(parts))


def _list_objects_v1(request: Request, store: ArtifactStore, bucket: str) -> Response:
    """ListObjects (version 1): ``marker`` instead of a continuation token; NextMarker on every truncated page."""
    query = request.query_params
    prefix = query.get("prefix", "")
    delimiter = query.get("delimiter", "")
    marker = query.get("marker", "")
    max_keys = _max_keys(request)
    url = query.get("encoding-type") == "url"
    contents, prefixes, truncated, last = _page(store, bucket, prefix, delimiter, marker, max_keys)
    parts = [
        f"<Name>{bucket}</Name>",
        _field("Prefix", prefix, url),
        _field("Marker", marker, url),
        f"<MaxKeys>{max_keys}</MaxKeys>",
        _field("Delimiter", delimiter, url) if delimiter else "",
        f"<IsTruncated>{'true' if truncated else 'false'}</IsTruncated>",
        _field("NextMarker", last, url) if truncated else "",
        "<EncodingType>url</EncodingType>" if url else "",
        _entries(store, bucket, contents, prefixes, url),
    ]
    return _xml("ListBucketResult", "".join(parts))


def _listing(
    store: ArtifactStore, bucket: str, prefix: str, delimiter: str, after: str
) -> Iterator[tuple[StoredObject, str]]:
    """(object, "") for keys, (object, common prefix) once per rolled-up prefix; all strictly after ``after``."""
    seen: set[str] = set()
    for item in store.list(bucket, prefix):
        if item.key.encode() <= after.encode():
            continue
        if delimiter:
            cut = item.key.find(delimiter, len(prefix))
            if cut != -1:
                common = item.key[: cut + len(delimiter)]
                if common in seen or (after.endswith(delimiter) and common == after):
                    continue
                seen.add(common)
                yield item, common
                continue
        yield item, ""


def _encode_token(value: str) -> str:
    return base64.urlsafe_b64encode(value.encode()).decode()


def _decode_token(token: str) -> str:
    try:
        return base64.urlsafe_b64decode(token.encode()).decode()
    except ValueError:
        raise StoreError("InvalidArgument", "The continuation token provided is incorrect.", 400) from None


def _field(name: str, value: str, url: bool) -> str:
    return f"<{name}>{_text(quote(value, safe='/') if url else value)}</{name}>"


def _text(value: str) -> str:
    """Escaped XML text; what XML cannot carry at all (echoed from hostile names) becomes U+FFFD."""
    return escape(_NOT_XML.sub("\ufffd", value))


def _iso(timestamp: float) -> str:
    return datetime.fromtimestamp(timestamp, UTC).strftime("%Y-%m-%dT%H:%M:%S.000Z")


# -- rendering ---------------------------------------------------------------------------------------------


def _xml(root: str, inner: str, status: int = 200) -> Response:
    body = f'<?xml version="1.0" encoding="UTF-8"?>\n<{root} xmlns="{S3_NAMESPACE}">{inner}</{root}>'
    return Response(body, status_code=status, media_type="application/xml")


def _error(request: Request, exc: HangarError, resource: str) -> Response:
    code = _AUTH_CODES.get(exc.code, exc.code)
    request_id = getattr(request.state, "request_id", "")
    headers = {"x-amz-request-id": request_id}
    if request.headers.get("content-length", "0") != "0" and not getattr(request.state, "body_read", False):
        # The client may still be holding the body back (Expect: 100-continue); this connection cannot be reused.
        headers["Connection"] = "close"
    if request.method == "HEAD":  # S3 sends HEAD errors without a body; botocore reads the status alone
        return Response(status_code=exc.status, headers=headers)
    body = (
        '<?xml version="1.0" encoding="UTF-8"?>\n'
        f"<Error><Code>{_text(code)}</Code><Message>{_text(exc.message)}</Message>"
        f"<Resource>{_text(resource)}</Resource><RequestId>{_text(request_id)}</RequestId></Error>"
    )
    return Response(body, status_code=exc.status, media_type="application/xml", headers=headers)


ROUTES = [
    Route("PUT", "/{bucket}", create_bucket, name="S3CreateBucket", auth="custom"),
    Route("GET", "/{bucket}", bucket_get, name="S3ListObjectsV2", auth="custom"),
    Route("PUT", "/{bucket}/", create_bucket, name="S3CreateBucketSlash", auth="custom"),
    Route("GET", "/{bucket}/", bucket_get, name="S3ListObjectsV2Slash", auth="custom"),
    Route("PUT", "/{bucket}/{key+}", object_put, name="S3PutObject", auth="custom"),
    Route("GET", "/{bucket}/{key+}", object_get, name="S3GetObject", auth="custom"),
    Route("DELETE", "/{bucket}/{key+}", object_delete, name="S3DeleteObject", auth="custom"),
    Route("POST", "/{bucket}/{key+}", object_post, name="S3PostObject", auth="custom"),
    Route("DELETE", "/{bucket}", not_implemented, name="S3DeleteBucket", auth="custom"),
]
