"""An artifact opened for reading (a zip or a folder), its entries checked before a single byte is written.

Refused here, from names and sizes alone: absolute names and ``..`` (zip slip), paths that pass through a file or
a symbolic link, links whose target leaves the tree, special files, more than ``MAX_FILES`` entries, a zip larger
than 250 MB, a declared unpacked size over 750 MB, and members that inflate like a zip bomb. A zip stays open
for the whole build, so a concurrent upload to the same key (a new inode) cannot change what is built.
"""

from __future__ import annotations

import abc
import os
import posixpath
import stat
import zipfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Literal

from hangar.artifacts import limits
from hangar.artifacts.api import BuildError
from hangar.artifacts.store import ArtifactLocation

MAX_LINK_TARGET = 1024


@dataclass(frozen=True)
class Entry:
    name: str  # relative POSIX path, normalised
    kind: Literal["file", "dir", "link"]
    size: int
    executable: bool = False
    target: str = ""  # for links: as written in the artifact (relative)


class Source(abc.ABC):
    """Checked entries of one artifact plus a way to read each file."""

    def __init__(self, uri: str, entries: list[Entry]) -> None:
        self.uri = uri
        self.entries = sorted(entries, key=lambda entry: entry.name)
        _check_tree(uri, self.entries)

    @abc.abstractmethod
    def open(self, entry: Entry) -> BinaryIO:
        """A binary stream of one file entry's content."""


class ZipSource(Source):
    def __init__(self, uri: str, archive: zipfile.ZipFile, infos: dict[str, zipfile.ZipInfo], entries: list[Entry]):
        self._archive = archive
        self._infos = infos
        super().__init__(uri, entries)

    def open(self, entry: Entry) -> BinaryIO:
        return self._archive.open(self._infos[entry.name])  # type: ignore[return-value]  # ZipExtFile reads as one


class DirSource(Source):
    def __init__(self, uri: str, root: Path, entries: list[Entry]) -> None:
        self._root = root
        super().__init__(uri, entries)

    def open(self, entry: Entry) -> BinaryIO:
        return open(self._root / entry.name, "rb", opener=_no_follow)


@contextmanager
def open_source(location: ArtifactLocation) -> Iterator[Source]:
    if location.kind == "dir":
        yield _scan_dir(location.uri, location.path)
        return
    size = location.path.stat().st_size
    if size > limits.MAX_ZIPPED_BYTES:
        limit = limits.MAX_ZIPPED_BYTES // limits.MB
        raise BuildError(f"{location.uri} is {size / limits.MB:.1f} MB zipped; the limit is {limit} MB")
    try:
        archive = zipfile.ZipFile(location.path)
    except (zipfile.BadZipFile, OSError) as exc:
        raise BuildError(f"{location.uri} is not a readable zip file ({exc})") from None
    with archive:
        yield _scan_zip(location.uri, archive)


def _scan_zip(uri: str, archive: zipfile.ZipFile) -> ZipSource:
    infos = archive.infolist()
    if len(infos) > limits.MAX_FILES:
        raise BuildError(f"{uri} has {len(infos)} entries; the limit is {limits.MAX_FILES}")
    declared = sum(info.file_size for info in infos)
    if declared > limits.MAX_UNPACKED_BYTES:
        raise BuildError(_too_big(uri, declared))
    entries: list[Entry] = []
    by_name: dict[str, zipfile.ZipInfo] = {}
    for info in infos:
        name = _normalise(uri, info.filename)
        if name is None:
            continue  # the archive's root folder ("./")
        mode = info.external_attr >> 16 if info.create_system == 3 else 0
        if info.is_dir() or stat.S_ISDIR(mode):
            entries.append(Entry(name, "dir", 0))
            continue
        if stat.S_ISLNK(mode):
            if info.file_size > MAX_LINK_TARGET:
                raise BuildError(f"{uri}: symbolic link {name} has an implausibly long target")
            target = archive.read(info).decode("utf-8", "replace")
            entries.append(Entry(name, "link", 0, target=_check_link(uri, name, target)))
            by_name[name] = info
            continue
        if stat.S_IFMT(mode) and not stat.S_ISREG(mode):  # zips often carry permission bits without a type
            raise BuildError(f"{uri}: {name} is not a regular file, folder or link")
        if info.file_size > limits.RATIO_CHECK_MIN_BYTES and (
            info.file_size > limits.MAX_COMPRESSION_RATIO * max(info.compress_size, 1)
        ):
            raise BuildError(
                f"{uri}: {name} inflates {info.file_size // max(info.compress_size, 1)}x "
                f"(over {limits.MAX_COMPRESSION_RATIO}x), which looks like a zip bomb"
            )
        entries.append(Entry(name, "file", info.file_size, executable=bool(mode & 0o111)))
        by_name[name] = info
    return ZipSource(uri, archive, by_name, entries)


def _scan_dir(uri: str, root: Path) -> DirSource:
    entries: list[Entry] = []
    total = 0
    real_root = os.path.realpath(root)
    for dirpath, dirnames, filenames in os.walk(root):
        for name in sorted(dirnames) + sorted(filenames):
            path = Path(dirpath) / name
            relative = path.relative_to(root).as_posix()
            info = path.lstat()
            if stat.S_ISLNK(info.st_mode):
                target = os.readlink(path)
                _check_link(uri, relative, target)
                if os.path.commonpath([real_root, os.path.realpath(path)]) != real_root:
                    raise BuildError(f"{uri}: symbolic link {relative} points outside the artifact")
                entries.append(Entry(relative, "link", 0, target=target))
                if name in dirnames:
                    dirnames.remove(name)  # os.walk would not follow it anyway; say so explicitly
            elif stat.S_ISDIR(info.st_mode):
                entries.append(Entry(relative, "dir", 0))
            elif stat.S_ISREG(info.st_mode):
                total += info.st_size
                if total > limits.MAX_UNPACKED_BYTES:
                    raise BuildError(_too_big(uri, total))
                entries.append(Entry(relative, "file", info.st_size, executable=bool(info.st_mode & 0o111)))
            else:
                raise BuildError(f"{uri}: {relative} is not a regular file, folder or link")
            if len(entries) > limits.MAX_FILES:
                raise BuildError(f"{uri} has more than {limits.MAX_FILES} entries")
    return DirSource(uri, root, entries)


def _normalise(uri: str, raw: str) -> str | None:
    """A member name as a safe relative path, or BuildError for absolute names and ``..`` (zip slip)."""
    if "\x00" in raw or raw.startswith("/") or "\\" in raw:
        raise BuildError(f"{uri}: entry {raw[:200]!r} has an absolute or unsafe name")
    parts = [part for part in raw.split("/") if part not in ("", ".")]
    if ".." in parts:
        raise BuildError(f"{uri}: entry {raw[:200]!r} escapes the artifact with '..' (zip slip)")
    return "/".join(parts) or None


def _check_link(uri: str, name: str, target: str) -> str:
    """Lexical check; the unpack phase checks again on disk, where chains of links are resolved for real."""
    if not target or target.startswith("/") or "\x00" in target:
        raise BuildError(f"{uri}: symbolic link {name} points outside the artifact ({target[:200]!r})")
    resolved = posixpath.normpath(posixpath.join(posixpath.dirname(name), target))
    if resolved == ".." or resolved.startswith("../"):
        raise BuildError(f"{uri}: symbolic link {name} points outside the artifact ({target[:200]!r})")
    return target


def _check_tree(uri: str, entries: list[Entry]) -> None:
    """No duplicate names, and nothing below a file or a link (so no write can follow a link)."""
    kinds: dict[str, str] = {}
    for entry in entries:
        if entry.name in kinds and not (entry.kind == "dir" and kinds[entry.name] == "dir"):
            raise BuildError(f"{uri}: entry {entry.name} appears more than once")
        kinds[entry.name] = entry.kind
    for entry in entries:
        parts = entry.name.split("/")
        for depth in range(1, len(parts)):
            parent = "/".join(parts[:depth])
            if kinds.get(parent, "dir") != "dir":
                raise BuildError(f"{uri}: entry {entry.name} lies below the {kinds[parent]} {parent}")


def _too_big(uri: str, size: int) -> str:
    return (
        f"{uri} unpacks to {size / limits.MB:.1f} MB or more; the limit is {limits.MAX_UNPACKED_BYTES // limits.MB} MB"
    )


def _no_follow(path: str, flags: int) -> int:
    return os.open(path, flags | os.O_NOFOLLOW)
