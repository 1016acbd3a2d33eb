"""Multipart uploads (what ``aws s3 cp`` uses above 8 MB): parts on disk, joined into one object on completion.

    <artifacts>/.tmp/multipart/<upload id>/upload.json     bucket and key the upload is for
    <artifacts>/.tmp/multipart/<upload id>/part-00001      one part, with its ETag in part-00001.etag

The whole object obeys the same 250 MB limit as a single PutObject; the limit is checked before each part is read.
Uploads neither completed nor aborted are removed a day later.
"""

from __future__ import annotations

import hashlib
import json
import re
import shutil
import time
import uuid
from pathlib import Path

from hangar.artifacts.limits import MAX_ZIPPED_BYTES
from hangar.artifacts.store import STALE_UPLOAD_S, ArtifactStore, StoreError

MAX_PARTS = 10_000
_UPLOAD_ID = re.compile(r"^[0-9a-f]{32}$")
CHUNK = 1024 * 1024


class MultipartUploads:
    def __init__(self, store: ArtifactStore) -> None:
        self.store = store
        self.root = store.root / ".tmp" / "multipart"

    def create(self, bucket: str, key: str) -> str:
        self.store.object_path(bucket, key)  # the bucket exists and the key is acceptable
        self._remove_stale()
        upload_id = uuid.uuid4().hex
        directory = self.root / upload_id
        directory.mkdir(parents=True)
        (directory / "upload.json").write_text(json.dumps({"bucket": bucket, "key": key}))
        return upload_id

    def room_for_part(self, bucket: str, key: str, upload_id: str, number: str, length: int) -> Path:
        """The path part ``number`` goes to, once it is clear the object stays within the size limit."""
        directory = self._directory(bucket, key, upload_id)
        if not number.isdigit() or not 1 <= int(number) <= MAX_PARTS:
            raise StoreError("InvalidArgument", f"Part number must be an integer between 1 and {MAX_PARTS}.", 400)
        part = directory / f"part-{int(number):05d}"
        others = sum(p.stat().st_size for p in directory.glob("part-?????") if p != part)
        if others + length > MAX_ZIPPED_BYTES:
            raise StoreError(
                "EntityTooLarge", f"The parts would exceed the maximum object size of {MAX_ZIPPED_BYTES} bytes.", 400
            )
        return part

    def put_part(self, part: Path, received: Path, sha256_hex: str) -> str:
        """Move a received part into place; returns its ETag (sha256 prefix, quoted)."""
        etag = f'"{sha256_hex[:32]}"'
        part.with_suffix(".etag").write_text(etag)
        received.replace(part)
        return etag

    def complete(self, bucket: str, key: str, upload_id: str, parts: list[tuple[int, str]]) -> str:
        """Join the listed (number, unquoted ETag) parts in order into the object; returns its version id.
        Blocking: call it from a thread."""
        directory = self._directory(bucket, key, upload_id)
        if not parts:
            raise StoreError("MalformedXML", "The request lists no parts.", 400)
        numbers = [number for number, _ in parts]
        if numbers != sorted(set(numbers)):
            raise StoreError("InvalidPartOrder", "Parts must be listed in ascending order, each once.", 400)
        joined = self.store.new_upload()
        digest = hashlib.sha256()
        size = 0
        try:
            with joined.open("wb") as out:
                for number, etag in parts:
                    part = directory / f"part-{number:05d}"
                    marker = part.with_suffix(".etag")
                    if not part.is_file() or marker.read_text() != f'"{etag}"':
                        raise StoreError("InvalidPart", f"Part {number} was not uploaded, or its ETag differs.", 400)
                    with part.open("rb") as source:
                        while chunk := source.read(CHUNK):
                            size += len(chunk)
                            if size > MAX_ZIPPED_BYTES:
                                raise StoreError("EntityTooLarge", "The object exceeds the maximum size.", 400)
                            digest.update(chunk)
                            out.write(chunk)
            version_id = self.store.put(bucket, key, joined, digest.hexdigest())
        finally:
            joined.unlink(missing_ok=True)
        shutil.rmtree(directory, ignore_errors=True)
        return version_id

    def abort(self, bucket: str, key: str, upload_id: str) -> None:
        shutil.rmtree(self._directory(bucket, key, upload_id), ignore_errors=True)

    def _directory(self, bucket: str, key: str, upload_id: str) -> Path:
        directory = self.root / upload_id
        try:
            found = _UPLOAD_ID.match(upload_id) and json.loads((directory / "upload.json").read_text())
        except (OSError, ValueError):
            found = None
        if not found or found != {"bucket": bucket, "key": key}:
            raise StoreError("NoSuchUpload", "The specified multipart upload does not exist.", 404)
        return directory

    def _remove_stale(self) -> None:
        if not self.root.is_dir():
            return
        now = time.time()
        for directory in self.root.iterdir():
            try:
                stale = now - directory.stat().st_mtime > STALE_UPLOAD_S
            except FileNotFoundError:
                continue
            if stale:
                shutil.rmtree(directory, ignore_errors=True)
