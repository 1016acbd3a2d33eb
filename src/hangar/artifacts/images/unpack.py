"""Unpack one image layer into a private tree, safely, and nothing else.

Every tar entry is placed by this module's own code (tarfile only parses): names are normalised and an entry with a
``..`` component is refused; every parent directory is checked with ``lstat`` and an entry that would pass through a
symlink or a non-directory is refused, so nothing is ever written outside the tree; files are created with
``O_CREAT | O_EXCL | O_NOFOLLOW``. Symlinks are stored as symlinks whatever they point to (absolute ones are
normal in images; they resolve inside the sandbox's ``/``) and are never followed here. Hard links must name a
regular file of the same layer. Character and block devices and FIFOs are skipped (as rootless runtimes do: a
session cannot create device nodes anyway). Ownership is not kept (everything belongs to Hangar), set-uid/set-gid/
sticky bits and group/other write bits are dropped, files are world-readable, directories ``0755``.

OCI whiteouts (``.wh.<name>``) and opaque markers (``.wh..wh..opq``) are not written: they are returned, and
``rootfs.assemble`` applies them to the layers below. Decompression (gzip, zstd or none, found by magic bytes) is
capped while streaming: an absolute cap on unpacked bytes and a ratio cap against compression bombs.
"""

from __future__ import annotations

import contextlib
import gzip
import io
import os
import posixpath
import shutil
import stat
import tarfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Protocol

from hangar.artifacts.images.errors import ImageError

WHITEOUT = ".wh."
OPAQUE = ".wh..wh..opq"
BOMB_RATIO = 100  # unpacked / compressed, checked once past BOMB_FLOOR bytes
BOMB_FLOOR = 64 * 1024 * 1024
MAX_ENTRIES = 500_000
_COPY = 1024 * 1024


@dataclass
class Budget:
    """What one image may still unpack (shared by all its layers)."""

    max_bytes: int
    used: int = 0
    entries: int = 0

    def spend(self, amount: int) -> None:
        self.used += amount
        if self.used > self.max_bytes:
            raise ImageError(f"the image unpacks to more than {self.max_bytes} bytes (the unpacked size cap)")


@dataclass
class LayerResult:
    whiteouts: list[str] = field(default_factory=list)
    opaque_dirs: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    size: int = 0


class _Reader(Protocol):
    """What the counters read from: the blob file, a gzip or zstd decompressing reader, or another counter."""

    def read(self, size: int = -1, /) -> bytes: ...


class _Counted(io.RawIOBase):
    """A file-like counting what passes through; used on both sides of the decompressor. A raw I/O object so the
    decompressors and tarfile's stream reader take it as the file they expect (they only ever call ``read``)."""

    def __init__(self, inner: _Reader) -> None:
        super().__init__()
        self.inner = inner
        self.count = 0

    def read(self, size: int = -1) -> bytes:
        data = self.inner.read(size)
        self.count += len(data)
        return data


class _Capped(_Counted):
    """The decompressed stream: refuses past the budget or at a bomb-like ratio, before the bytes reach disk."""

    def __init__(self, inner: _Reader, compressed: _Counted, limit: int, layer: str) -> None:
        super().__init__(inner)
        self.compressed = compressed
        self.limit = limit
        self.layer = layer

    def read(self, size: int = -1) -> bytes:
        data = super().read(size if size >= 0 else _COPY)
        if self.count > self.limit:
            raise ImageError(f"layer {self.layer} decompresses past the unpacked size cap ({self.limit} bytes)")
        if self.count > BOMB_FLOOR and self.count > BOMB_RATIO * max(self.compressed.count, 1):
            raise ImageError(
                f"layer {self.layer} looks like a compression bomb: {self.compressed.count} compressed bytes "
                f"already unpacked to {self.count} (ratio cap {BOMB_RATIO})"
            )
        return data


def _decompressed(raw: IO[bytes], layer: str, limit: int) -> tuple[_Capped, _Counted]:
    head = raw.read(4)
    raw.seek(0)
    compressed = _Counted(raw)
    if head[:2] == b"\x1f\x8b":
        inner: _Reader = gzip.GzipFile(fileobj=compressed, mode="rb")
    elif head == b"\x28\xb5\x2f\xfd":
        import zstandard

        reader = zstandard.ZstdDecompressor().stream_reader
        inner = reader(compressed, read_across_frames=True)  # type: ignore[arg-type]  # the stub wants IO; it only read()s
    else:
        inner = compressed
    return _Capped(inner, compressed, limit, layer), compressed


def normalise(name: str) -> str:
    """A tar member name as a path relative to the layer root; ``..`` anywhere is an attack, not a path."""
    if "\x00" in name:
        raise ImageError(f"layer entry {name[:200]!r} contains a NUL byte")
    parts = [p for p in name.split("/") if p not in ("", ".")]
    if ".." in parts:
        raise ImageError(f"layer entry {name[:200]!r} leaves the image root (path traversal)")
    return "/".join(parts)


def _parent(root: Path, relative: str, *, create: bool) -> Path | None:
    """The real directory that will hold ``relative``, checked component by component (never through a symlink)."""
    current = root
    for part in posixpath.dirname(relative).split("/") if "/" in relative else []:
        current = current / part
        try:
            info = os.lstat(current)
        except FileNotFoundError:
            if not create:
                return None
            os.mkdir(current, 0o755)
            continue
        if not stat.S_ISDIR(info.st_mode):
            if not create:
                return None
            kind = "a symlink" if stat.S_ISLNK(info.st_mode) else "a non-directory"
            raise ImageError(f"layer entry {relative[:200]!r} would be written through {kind} ({part!r})")
    return current


def remove(path: Path) -> None:
    """Remove whatever is at ``path`` (never following a symlink)."""
    try:
        info = os.lstat(path)
    except FileNotFoundError:
        return
    if stat.S_ISDIR(info.st_mode):
        shutil.rmtree(path)
    else:
        os.unlink(path)


def file_mode(mode: int) -> int:
    """The image's permission bits without set-uid/set-gid/sticky and without group/other write, plus read for
    all. Sessions see the store through an ID-mapped, read-only lower layer where files appear owned by the
    session, so the owner bits are what the image's processes get (and writes go to their overlay)."""
    return (mode & 0o755) | 0o444


def unpack_layer(blob: Path, tree: Path, layer: str, budget: Budget) -> LayerResult:
    """Unpack the layer blob into the empty directory ``tree``; raise ``ImageError`` on anything hostile."""
    result = LayerResult()
    with blob.open("rb") as raw:
        stream, _ = _decompressed(raw, layer, budget.max_bytes - budget.used)
        try:
            with tarfile.open(fileobj=stream, mode="r|") as archive:
                for member in archive:
                    budget.entries += 1
                    if budget.entries > MAX_ENTRIES:
                        raise ImageError(f"the image has more than {MAX_ENTRIES} files")
                    _place(archive, member, tree, result, budget)
                    # Streaming: keep no per-member state.
                    archive.members = []  # type: ignore[attr-defined]  # a real attribute typeshed leaves out
        except (tarfile.TarError, EOFError, OSError) as exc:
            if isinstance(exc, ImageError):
                raise
            raise ImageError(f"layer {layer} is not a readable tar archive: {type(exc).__name__}: {exc}") from None
    return result


def _place(archive: tarfile.TarFile, member: tarfile.TarInfo, tree: Path, result: LayerResult, budget: Budget) -> None:
    relative = normalise(member.name)
    if not relative:
        return  # the root itself
    base = posixpath.basename(relative)
    if base.startswith(WHITEOUT):
        _parent(tree, relative, create=True)
        if base == OPAQUE:
            result.opaque_dirs.append(posixpath.dirname(relative))
        else:
            hidden = base[len(WHITEOUT) :]
            if hidden in ("", ".", "..") or hidden.startswith(WHITEOUT):
                raise ImageError(f"layer entry {relative[:200]!r} is a malformed whiteout")
            result.whiteouts.append(posixpath.join(posixpath.dirname(relative), hidden))
        return
    parent = _parent(tree, relative, create=True)
    assert parent is not None
    target = parent / base
    existing = None
    with contextlib.suppress(FileNotFoundError):
        existing = os.lstat(target)
    if member.isdir():
        if existing is not None and not stat.S_ISDIR(existing.st_mode):
            remove(target)
            existing = None
        if existing is None:
            os.mkdir(target, 0o755)
        return
    if existing is not None:
        remove(target)
    if member.isreg():
        _write_file(archive, member, target, relative, result, budget)
    elif member.issym():
        if "\x00" in member.linkname or len(member.linkname) > 4096:
            raise ImageError(f"symlink {relative[:200]!r} has an invalid target")
        os.symlink(member.linkname, target)
    elif member.islnk():
        _hard_link(tree, member, target, relative)
    else:
        kind = {tarfile.CHRTYPE: "character device", tarfile.BLKTYPE: "block device", tarfile.FIFOTYPE: "fifo"}
        result.skipped.append(f"{relative} ({kind.get(member.type, 'unsupported entry type')})")


def _write_file(
    archive: tarfile.TarFile, member: tarfile.TarInfo, target: Path, relative: str, result: LayerResult, budget: Budget
) -> None:
    budget.spend(member.size)
    result.size += member.size
    source = archive.extractfile(member)
    fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
    try:
        written = 0
        while source is not None and (chunk := source.read(_COPY)):
            written += len(chunk)
            if written > member.size:
                raise ImageError(f"layer entry {relative[:200]!r} is longer than its header says")
            os.write(fd, chunk)
        os.fchmod(fd, file_mode(member.mode))
        os.utime(fd, (member.mtime, member.mtime))
    finally:
        os.close(fd)


def _hard_link(tree: Path, member: tarfile.TarInfo, target: Path, relative: str) -> None:
    source_relative = normalise(member.linkname)
    parent = _parent(tree, source_relative, create=False) if source_relative else None
    source = None if parent is None else parent / posixpath.basename(source_relative)
    try:
        info = None if source is None else os.lstat(source)
    except FileNotFoundError:
        info = None
    if source is None or info is None or not stat.S_ISREG(info.st_mode):
        raise ImageError(
            f"hard link {relative[:200]!r} must name a regular file earlier in the same layer, "
            f"not {member.linkname[:200]!r}"
        )
    os.link(source, target, follow_symlinks=False)
