"""Phase 1: the content hash of everything that shapes an environment; equal hashes share one build."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

from hangar.artifacts import limits
from hangar.artifacts.api import BuildError
from hangar.artifacts.runtimes import Interpreter
from hangar.artifacts.source import Source

# Bump when the layout of a built version changes, so old builds are not reused.
BUILD_FORMAT = "hangar-version-v1"
CHUNK = 1024 * 1024


@dataclass(frozen=True)
class Fingerprint:
    content_hash: str
    file_digests: dict[str, str]  # entry name -> sha256 of its bytes, checked again while unpacking


def fingerprint(source: Source, interpreter: Interpreter, sdk_fingerprint: str) -> Fingerprint:
    """Hash code (file and link names, executable bits, link targets, bytes), requirements (part of the code),
    runtime, interpreter and SDK."""
    digest = hashlib.sha256()
    for part in (BUILD_FORMAT, interpreter.runtime, str(interpreter.path), sdk_fingerprint):
        digest.update(part.encode() + b"\0")
    files: dict[str, str] = {}
    total = 0
    for entry in source.entries:
        if entry.kind == "dir":
            continue  # implied by the files below it; zips often omit folder entries that a folder always has
        digest.update(f"{entry.kind}\0{entry.name}\0{int(entry.executable)}\0{entry.target}\0".encode())
        if entry.kind != "file":
            continue
        file_digest = hashlib.sha256()
        with source.open(entry) as stream:
            while chunk := stream.read(CHUNK):
                total += len(chunk)
                if total > limits.MAX_UNPACKED_BYTES:
                    raise BuildError(f"{source.uri} unpacks to more than {limits.MAX_UNPACKED_BYTES // limits.MB} MB")
                file_digest.update(chunk)
        files[entry.name] = file_digest.hexdigest()
        digest.update(files[entry.name].encode() + b"\0")
    return Fingerprint(digest.hexdigest(), files)
