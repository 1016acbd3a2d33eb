"""Content-addressed blobs on disk and resumable upload sessions.

A blob becomes visible only under its verified digest: bytes go to a temporary file, are fsynced, hashed, and
renamed into ``blobs/sha256/<hex>`` only when the hash matches. A kill -9 at any point leaves at most a stray
temporary file (swept at start), never a half blob under a digest.
"""

from __future__ import annotations

import hashlib
import os
import re
import secrets
import time
from collections.abc import Iterator
from pathlib import Path

from hangar.artifacts.images.errors import RegistryError, blob_unknown

DIGEST = re.compile(r"^sha256:[0-9a-f]{64}$")
_UPLOAD_ID = re.compile(r"^[0-9a-f]{32}$")
CHUNK = 1024 * 1024
UPLOAD_TTL_S = 24 * 3600


def check_digest(digest: str) -> str:
    """Only sha256 digests (what every client sends); anything else is DIGEST_INVALID."""
    if not DIGEST.match(digest):
        raise RegistryError("DIGEST_INVALID", f"unsupported or malformed digest: {digest[:100]!r}", 400)
    return digest


def sha256_digest(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def file_digest(path: Path) -> str:
    hasher = hashlib.sha256()
    with path.open("rb") as handle:
        while chunk := handle.read(CHUNK):
            hasher.update(chunk)
    return "sha256:" + hasher.hexdigest()


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class BlobStore:
    """``<root>/blobs/sha256/<hex>`` (immutable, mode 0444) and ``<root>/uploads/<id>`` (sessions in progress)."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.blob_dir = root / "blobs" / "sha256"
        self.upload_dir = root / "uploads"
        self.tmp_dir = root / "tmp"
        for directory in (self.blob_dir, self.upload_dir, self.tmp_dir):
            directory.mkdir(parents=True, exist_ok=True)

    # -- blobs ---------------------------------------------------------------------------------------------

    def path(self, digest: str) -> Path:
        return self.blob_dir / check_digest(digest).split(":", 1)[1]

    def exists(self, digest: str) -> bool:
        return self.path(digest).is_file()

    def size(self, digest: str) -> int:
        try:
            return self.path(digest).stat().st_size
        except FileNotFoundError:
            raise blob_unknown(digest) from None

    def read(self, digest: str) -> bytes:
        try:
            return self.path(digest).read_bytes()
        except FileNotFoundError:
            raise blob_unknown(digest) from None

    def put_bytes(self, data: bytes, expected: str | None = None) -> str:
        """Store ``data``; refuse it when ``expected`` is given and the content hashes otherwise."""
        digest = sha256_digest(data)
        if expected is not None and expected != digest:
            raise RegistryError("DIGEST_INVALID", f"content digest {digest} does not match {expected}", 400)
        if not self.exists(digest):
            tmp = self.tmp_dir / secrets.token_hex(16)
            with tmp.open("wb") as handle:
                handle.write(data)
                handle.flush()
                os.fsync(handle.fileno())
            self._publish(tmp, digest)
        return digest

    def adopt(self, tmp: Path, expected: str) -> str:
        """Move a finished temporary file into the store if (and only if) it hashes to ``expected``."""
        check_digest(expected)
        with tmp.open("rb+") as handle:
            os.fsync(handle.fileno())
        actual = file_digest(tmp)
        if actual != expected:
            tmp.unlink(missing_ok=True)
            raise RegistryError("DIGEST_INVALID", f"content digest {actual} does not match {expected}", 400)
        if self.exists(expected):
            tmp.unlink(missing_ok=True)
        else:
            self._publish(tmp, expected)
        return expected

    def _publish(self, tmp: Path, digest: str) -> None:
        os.chmod(tmp, 0o444)
        os.replace(tmp, self.path(digest))
        _fsync_dir(self.blob_dir)

    def mtime(self, digest: str) -> float:
        try:
            return self.path(digest).stat().st_mtime
        except FileNotFoundError:
            return 0.0

    def delete(self, digest: str) -> None:
        self.path(digest).unlink(missing_ok=True)

    def digests(self) -> Iterator[str]:
        for entry in self.blob_dir.iterdir():
            yield "sha256:" + entry.name

    def new_temp(self) -> Path:
        return self.tmp_dir / secrets.token_hex(16)

    # -- upload sessions -------------------------------------------------------------------------------------

    def start_upload(self) -> str:
        upload_id = secrets.token_hex(16)
        (self.upload_dir / upload_id).touch()
        return upload_id

    def upload_path(self, upload_id: str) -> Path:
        path = self.upload_dir / upload_id
        if not _UPLOAD_ID.match(upload_id) or not path.is_file():
            raise RegistryError("BLOB_UPLOAD_UNKNOWN", "blob upload unknown to registry", 404)
        return path

    def upload_offset(self, upload_id: str) -> int:
        return self.upload_path(upload_id).stat().st_size

    def cancel_upload(self, upload_id: str) -> None:
        self.upload_path(upload_id).unlink(missing_ok=True)

    def finish_upload(self, upload_id: str, digest: str) -> str:
        """The upload's bytes become the blob ``digest`` (verified) and the session ends, whatever the outcome."""
        path = self.upload_path(upload_id)
        tmp = self.new_temp()
        os.replace(path, tmp)
        return self.adopt(tmp, digest)

    def sweep(self, older_than_s: float = 0.0) -> None:
        """Drop temporary files (always stale at start) and upload sessions idle for longer than a day."""
        now = time.time()
        for entry in self.tmp_dir.iterdir():
            if now - entry.stat().st_mtime >= older_than_s:
                entry.unlink(missing_ok=True)
        for entry in self.upload_dir.iterdir():
            if now - entry.stat().st_mtime > UPLOAD_TTL_S:
                entry.unlink(missing_ok=True)
