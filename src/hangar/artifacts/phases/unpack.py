"""Phase 2: write the checked entries into a fresh code dir; files first, links last, nothing followed."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

from hangar.artifacts.api import BuildError
from hangar.artifacts.phases.hashing import CHUNK, Fingerprint
from hangar.artifacts.source import Source


def unpack(source: Source, fingerprint: Fingerprint, code_dir: Path) -> None:
    """Every byte written is counted and hashed; a file that differs from the hashed one fails the build."""
    code_dir.mkdir(mode=0o755)
    for entry in source.entries:
        if entry.kind == "dir":
            (code_dir / entry.name).mkdir(mode=0o755, parents=True, exist_ok=True)
    for entry in source.entries:
        if entry.kind != "file":
            continue
        target = code_dir / entry.name
        target.parent.mkdir(mode=0o755, parents=True, exist_ok=True)
        digest = hashlib.sha256()
        written = 0
        fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o755 if entry.executable else 0o644)
        with source.open(entry) as stream, os.fdopen(fd, "wb") as out:
            while chunk := stream.read(CHUNK):
                written += len(chunk)
                if written > entry.size:
                    break
                digest.update(chunk)
                out.write(chunk)
        if written != entry.size or digest.hexdigest() != fingerprint.file_digests[entry.name]:
            raise BuildError(f"{source.uri}: {entry.name} changed while it was being built; deploy again")
    real_root = os.path.realpath(code_dir)
    links = [entry for entry in source.entries if entry.kind == "link"]
    for entry in links:
        (code_dir / entry.name).parent.mkdir(mode=0o755, parents=True, exist_ok=True)
        os.symlink(entry.target, code_dir / entry.name)
    for entry in links:
        # Links are in place now, so chains resolve for real: refuse any that ends outside the code dir.
        if os.path.commonpath([real_root, os.path.realpath(code_dir / entry.name)]) != real_root:
            raise BuildError(f"{source.uri}: symbolic link {entry.name} points outside the artifact")
