"""Hangar's own artifact store: S3-style buckets and keys kept as plain files under one directory.

Layout under ``settings.resolved_artifacts_dir``::

    <bucket>/<key>                       the current object (a file); a key prefix may also be a folder of files
    .versions/<bucket>/<keyhash>/<id>    every version ever put, hard-linked to the same inode (no extra copy)
    .tmp/                                uploads in flight; renamed into place only when complete and verified

Bucket names cannot start with ``.``, so the bookkeeping directories never collide with a bucket. A version id is
the first 32 hex digits of the object's sha256: putting identical bytes twice yields the same id.
"""

from __future__ import annotations

import builtins
import contextlib
import hashlib
import ipaddress
import os
import re
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from hangar.domain.errors import HangarError

# S3's rules for new buckets (3-63 characters, lower case, digits, dots and hyphens, no "..", not an IP address).
_BUCKET = re.compile(r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$")
# First path segments of Hangar's own API: a bucket of that name would shadow (or be shadowed by) an API route.
RESERVED_BUCKETS = frozenset(
    {
        "runtimes",
        "identities",
        "tags",
        "healthz",
        "hangar",
        "console",
        "static",
        "metrics",
        "capacity-providers",
        "workload-identities",
        "oauth2",
        "invocations",
        "ping",
    }
)
MAX_KEY_BYTES = 1024
MAX_SEGMENT_BYTES = 255  # NAME_MAX of the filesystem that holds the objects
STALE_UPLOAD_S = 24 * 3600  # unfinished uploads (single or multipart) older than this are removed


class StoreError(HangarError):
    """An S3-coded failure of the artifact store (``code`` is the S3 error code, e.g. ``NoSuchKey``)."""

    def __init__(self, code: str, message: str, status: int) -> None:
        super().__init__(message)
        self.code = code
        self.status = status


@dataclass(frozen=True)
class StoredObject:
    key: str
    path: Path
    size: int
    mtime: float


@dataclass(frozen=True)
class ArtifactLocation:
    """Where ``s3://bucket/prefix[?versionId]`` lives on disk: one zip file, or one folder of files."""

    uri: str
    path: Path
    kind: Literal["zip", "dir"]


def check_bucket_name(bucket: str) -> None:
    if not _BUCKET.match(bucket) or ".." in bucket or bucket.startswith("xn--") or bucket.endswith("-s3alias"):
        raise StoreError(
            "InvalidBucketName",
            f"The bucket name {bucket[:80]!r} is not valid: use 3-63 lower-case letters, digits, '.' and '-', "
            "starting and ending with a letter or digit.",
            400,
        )
    try:
        ipaddress.IPv4Address(bucket)
    except ValueError:
        pass
    else:
        raise StoreError("InvalidBucketName", "A bucket name must not look like an IP address.", 400)
    if bucket in RESERVED_BUCKETS:
        raise StoreError(
            "InvalidBucketName", f"The bucket name {bucket!r} is reserved: it is a path of Hangar's own API.", 400
        )


def key_parts(key: str, *, allow_trailing_slash: bool = False) -> list[str]:
    """Split an object key into path segments, refusing any that could leave the bucket's directory."""
    if allow_trailing_slash:
        key = key.rstrip("/")
    if not key or len(key.encode()) > MAX_KEY_BYTES:
        raise StoreError("KeyTooLongError" if key else "InvalidArgument", "Object keys must be 1-1024 bytes.", 400)
    parts = key.split("/")
    for part in parts:
        if part in ("", ".", "..") or "\x00" in part:
            raise StoreError(
                "InvalidArgument",
                f"Object key {key[:200]!r} is not stored here: keys must not start with '/', contain '//', "
                "or have '.' or '..' segments.",
                400,
            )
        if len(part.encode()) > MAX_SEGMENT_BYTES:
            raise StoreError(
                "KeyTooLongError",
                f"Each '/'-separated part of a key is a file name here: at most {MAX_SEGMENT_BYTES} bytes.",
                400,
            )
    return parts


class ArtifactStore:
    """Buckets and objects on the local filesystem; safe for concurrent writers (temp file + atomic rename)."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self._versions = root / ".versions"
        self._tmp = root / ".tmp"

    # -- buckets -------------------------------------------------------------------------------------------

    def bucket_dir(self, bucket: str, *, must_exist: bool = True) -> Path:
        check_bucket_name(bucket)
        path = self.root / bucket
        if must_exist and not path.is_dir():
            raise StoreError("NoSuchBucket", f"The bucket {bucket!r} does not exist.", 404)
        return path

    def create_bucket(self, bucket: str) -> None:
        path = self.bucket_dir(bucket, must_exist=False)
        self.root.mkdir(parents=True, exist_ok=True)
        try:
            path.mkdir(mode=0o755)
        except FileExistsError:
            raise StoreError(
                "BucketAlreadyOwnedByYou", f"The bucket {bucket!r} already exists and is yours.", 409
            ) from None

    # -- objects -------------------------------------------------------------------------------------------

    def object_path(self, bucket: str, key: str) -> Path:
        return self.bucket_dir(bucket).joinpath(*key_parts(key))

    def new_upload(self) -> Path:
        """A fresh temporary path for an upload in flight (same filesystem as the buckets).

        Uploads delete their file when they end; files older than a day are leftovers of a crash."""
        self._tmp.mkdir(parents=True, exist_ok=True)
        cutoff = time.time() - STALE_UPLOAD_S
        for leftover in self._tmp.glob("upload-*"):
            with contextlib.suppress(FileNotFoundError):
                if leftover.stat().st_mtime < cutoff:
                    leftover.unlink()
        return self._tmp / f"upload-{uuid.uuid4().hex}"

    def put(self, bucket: str, key: str, upload: Path, sha256_hex: str) -> str:
        """Move a complete upload into place as the current object; return its version id."""
        target = self.object_path(bucket, key)
        version_id = sha256_hex[:32]
        version_path = self._version_dir(bucket, key) / version_id
        try:
            target.parent.mkdir(parents=True, exist_ok=True)
        except (FileExistsError, NotADirectoryError):
            raise StoreError(
                "InvalidArgument", f"Key {key!r} would nest under an existing object; pick another key.", 400
            ) from None
        if target.is_dir():
            raise StoreError("InvalidArgument", f"Key {key!r} is already a folder of objects.", 400)
        upload.chmod(0o644)
        version_path.parent.mkdir(parents=True, exist_ok=True)
        if not version_path.exists():
            staged = version_path.with_name(f".{version_id}.{uuid.uuid4().hex}")  # unique: puts may race
            os.link(upload, staged)
            os.replace(staged, version_path)
        os.replace(upload, target)
        return version_id

    def get(self, bucket: str, key: str, version_id: str | None = None) -> StoredObject:
        path = self.object_path(bucket, key)
        if version_id is not None:
            if not re.fullmatch(r"[0-9a-f]{32}", version_id):
                raise StoreError("InvalidArgument", "Invalid version id specified", 400)
            path = self._version_dir(bucket, key) / version_id
            if not path.is_file():
                raise StoreError("NoSuchVersion", f"Key {key!r} has no version {version_id}.", 404)
        elif not path.is_file():
            raise StoreError("NoSuchKey", "The specified key does not exist.", 404)
        stat = path.stat()
        return StoredObject(key=key, path=path, size=stat.st_size, mtime=stat.st_mtime)

    def delete(self, bucket: str, key: str) -> None:
        """Remove the current object (its versions stay, so runtimes that name a version keep building)."""
        path = self.object_path(bucket, key)
        if path.is_file():
            path.unlink()

    def list(self, bucket: str, prefix: str = "") -> Iterator[StoredObject]:
        """Every object of the bucket whose key starts with ``prefix``, in S3 (UTF-8 byte) order."""
        root = self.bucket_dir(bucket)
        found: list[StoredObject] = []
        for dirpath, dirnames, filenames in os.walk(root):
            relative = Path(dirpath).relative_to(root).as_posix()
            base = "" if relative == "." else relative + "/"
            if prefix and not (base.startswith(prefix) or prefix.startswith(base)):
                dirnames.clear()
                continue
            for name in filenames:
                key = base + name
                if key.startswith(prefix):
                    path = Path(dirpath) / name
                    stat = path.lstat()
                    found.append(StoredObject(key=key, path=path, size=stat.st_size, mtime=stat.st_mtime))
        found.sort(key=lambda item: item.key.encode())
        yield from found

    def version_files(self, bucket: str, key: str) -> builtins.list[Path]:  # list: a method of this class
        directory = self._version_dir(bucket, key)
        return sorted(p for p in directory.iterdir() if not p.name.startswith(".")) if directory.is_dir() else []

    # -- what the builder reads ----------------------------------------------------------------------------

    def locate(self, bucket: str, prefix: str, version_id: str | None) -> ArtifactLocation:
        """Resolve ``codeConfiguration.code.s3`` to a zip file or a folder; StoreError when there is none."""
        uri = f"s3://{bucket}/{prefix}"
        if version_id is not None:
            stored = self.get(bucket, prefix, version_id)
            return ArtifactLocation(f"{uri}?versionId={version_id}", stored.path, "zip")
        path = self.bucket_dir(bucket).joinpath(*key_parts(prefix, allow_trailing_slash=True))
        if path.is_symlink():
            raise StoreError("InvalidArgument", f"{uri} is a symbolic link; store the artifact itself.", 400)
        if path.is_dir():
            return ArtifactLocation(uri, path, "dir")
        if path.is_file():
            return ArtifactLocation(uri, path, "zip")
        raise StoreError("NoSuchKey", f"No artifact at {uri}: upload a zip to that key or files under it.", 404)

    def _version_dir(self, bucket: str, key: str) -> Path:
        return self._versions / bucket / hashlib.sha256(key.encode()).hexdigest()[:32]
