"""Session logs on disk, in CloudWatch Logs' shape: one log group per runtime endpoint, one log stream per session.

Layout under ``root`` (``<data_dir>/logs``), so logs outlive their session and a Hangar restart::

    <runtime id>/<endpoint name>/<digest of the stream name>/stream.json      {"name", "created", "session"}
    <runtime id>/<endpoint name>/<digest of the stream name>/<first seq>.jsonl one event a line: [ms, seq, "text"]

A stream is a few segments: a segment is closed at a quarter of ``session_bytes`` and the oldest segments are
deleted once the stream holds more than that, so one session's flood never costs more than its own budget. The
sweep (``sweep``) deletes streams whose last event is older than ``retention_s`` and then the oldest streams of a
runtime that holds more than ``runtime_bytes``; streams being written are never swept. Every event carries a
sequence number that only grows within its stream: read tokens are positions in it (``logs_api``).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import shutil
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

GROUP_PREFIX = "/aws/bedrock-agentcore/runtimes/"
STREAM_KIND = "[runtime-logs]"
_NAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_-]{0,99}$")
_SEGMENT = re.compile(r"^(\d{12})\.jsonl$")
MIN_SEGMENT_BYTES = 16 * 1024


def group_name(runtime_id: str, endpoint: str) -> str:
    """AgentCore's log group of a runtime endpoint."""
    return f"{GROUP_PREFIX}{runtime_id}-{endpoint}"


def stream_name(session_id: str, started: float) -> str:
    """AgentCore names its streams ``YYYY/MM/DD/[runtime-logs]<instance id>``; a Hangar session is the instance."""
    return datetime.fromtimestamp(started, UTC).strftime("%Y/%m/%d/") + STREAM_KIND + session_id


@dataclass(frozen=True)
class LogEvent:
    timestamp: int  # ms since the epoch, when Hangar read the line
    seq: int  # grows by one per event within its stream
    message: str


@dataclass(frozen=True)
class Stream:
    group: str
    name: str
    directory: Path
    created: int  # ms

    def segments(self) -> list[Path]:
        """The stream's segment files, oldest first."""
        try:
            names = sorted(p.name for p in self.directory.iterdir() if _SEGMENT.match(p.name))
        except OSError:
            return []
        return [self.directory / n for n in names]

    def stored_bytes(self) -> int:
        return sum(_size(p) for p in self.segments())

    def last_write(self) -> float:
        """When an event was last written (the newest segment's mtime), seconds."""
        segments = self.segments()
        return _mtime(segments[-1]) if segments else self.created / 1000

    def events(self) -> Iterator[LogEvent]:
        """All kept events, oldest first; a torn last line (a crash mid-write) is skipped."""
        for segment in self.segments():
            try:
                lines = segment.read_bytes().splitlines()
            except OSError:
                continue
            for line in lines:
                event = _parse(line)
                if event is not None:
                    yield event

    def bounds(self) -> tuple[LogEvent | None, LogEvent | None]:
        """First and last kept events, reading only the first and last segments."""
        segments = self.segments()
        if not segments:
            return None, None
        first = _first_event(segments[0])
        last = _last_event(segments[-1]) or first
        return first, last


class StreamWriter:
    """Appends one session's events to its stream, rotating segments within the session's budget."""

    def __init__(self, stream: Stream, session_bytes: int) -> None:
        self.stream = stream
        self.session_bytes = max(session_bytes, MIN_SEGMENT_BYTES)
        self.segment_bytes = max(self.session_bytes // 4, MIN_SEGMENT_BYTES // 4)
        segments = stream.segments()
        last = _last_event(segments[-1]) if segments else None
        self.next_seq = last.seq + 1 if last else (_first_seq(segments[-1]) if segments else 0)
        self._current = segments[-1] if segments and _ends_whole(segments[-1]) else None  # torn: a new segment
        self._current_size = _size(self._current) if self._current else 0
        self._total = sum(_size(p) for p in segments)

    def append(self, events: list[tuple[int, str]]) -> None:
        """Write ``(timestamp ms, text)`` events in order (one write per segment touched)."""
        pending = b""
        for timestamp, message in events:
            line = json.dumps([timestamp, self.next_seq, message], ensure_ascii=False).encode() + b"\n"
            if self._current is None or self._current_size + len(line) > self.segment_bytes:
                self._write(pending)
                pending = b""
                self._current = self.stream.directory / f"{self.next_seq:012d}.jsonl"
                self._current_size = 0
            pending += line
            self._current_size += len(line)
            self._total += len(line)
            self.next_seq += 1
        self._write(pending)
        self._trim()

    def _write(self, data: bytes) -> None:
        if data and self._current is not None:
            with open(self._current, "ab") as out:
                out.write(data)

    def _trim(self) -> None:
        if self._total <= self.session_bytes:
            return
        segments = self.stream.segments()
        for segment in segments[:-1]:  # the segment being written stays
            if self._total <= self.session_bytes:
                break
            self._total -= _size(segment)
            with contextlib.suppress(FileNotFoundError):
                segment.unlink()


class LogStore:
    """Every session log of one installation; groups and streams are found by listing, nothing in memory."""

    def __init__(self, root: Path, session_bytes: int, runtime_bytes: int, retention_s: float) -> None:
        self.root = root
        self.session_bytes = session_bytes
        self.runtime_bytes = runtime_bytes
        self.retention_s = retention_s
        self._writing: set[Path] = set()  # stream directories with a live writer: the sweep leaves them alone
        self._lock = threading.Lock()

    def open_writer(self, runtime_id: str, endpoint: str, session_id: str, started: float) -> StreamWriter:
        """The writer of a session's stream (created, or continued when the same session id comes back)."""
        if not (_NAME.match(runtime_id) and _NAME.match(endpoint)):
            raise ValueError(f"not a log group this store can hold: {runtime_id!r}, {endpoint!r}")
        name = stream_name(session_id, started)
        directory = self.root / runtime_id / endpoint / _digest(name)
        self.root.mkdir(mode=0o700, parents=True, exist_ok=True)  # sessions' output is nobody else's to read
        directory.mkdir(parents=True, exist_ok=True)
        meta = directory / "stream.json"
        created = int(started * 1000)
        if meta.exists():
            created = int(_read_meta(meta).get("created", created))
        else:
            tmp = meta.with_suffix(".tmp")
            tmp.write_text(json.dumps({"name": name, "created": created, "session": session_id}))
            tmp.replace(meta)
        with self._lock:
            self._writing.add(directory)
        return StreamWriter(Stream(group_name(runtime_id, endpoint), name, directory, created), self.session_bytes)

    def close_writer(self, writer: StreamWriter) -> None:
        with self._lock:
            self._writing.discard(writer.stream.directory)

    def groups(self) -> list[tuple[str, Path]]:
        """``(group name, directory)`` of every group holding at least one stream, by name."""
        found = []
        for runtime in _subdirs(self.root):
            for endpoint in _subdirs(runtime):
                if any(True for _ in _subdirs(endpoint)):
                    found.append((group_name(runtime.name, endpoint.name), endpoint))
        return sorted(found)

    def group(self, name: str) -> Path | None:
        """The directory of log group ``name``, or None."""
        if not name.startswith(GROUP_PREFIX):
            return None
        for group, directory in self.groups():
            if group == name:
                return directory
        return None

    def streams(self, group: str) -> list[Stream] | None:
        """The streams of a group by name, or None when there is no such group."""
        directory = self.group(group)
        if directory is None:
            return None
        found = []
        for sub in _subdirs(directory):
            meta = _read_meta(sub / "stream.json")
            if isinstance(meta.get("name"), str):
                found.append(Stream(group, meta["name"], sub, int(meta.get("created", 0))))
        return sorted(found, key=lambda s: s.name)

    def sweep(self, now: float | None = None) -> int:
        """Apply retention (age, then each runtime's size); returns how many streams were deleted."""
        now = time.time() if now is None else now
        deleted = 0
        with self._lock:
            writing = set(self._writing)
        for runtime in _subdirs(self.root):
            streams = [s for e in _subdirs(runtime) for s in _subdirs(e) if s not in writing]
            aged = sorted(((_newest_mtime(s), s) for s in streams), key=lambda pair: pair[0])
            total = sum(_dir_bytes(s) for s in _subdirs_all(runtime))
            for last, stream in aged:
                if last >= now - self.retention_s and total <= self.runtime_bytes:
                    break
                total -= _dir_bytes(stream)
                shutil.rmtree(stream, ignore_errors=True)
                deleted += 1
            for endpoint in _subdirs(runtime):
                with contextlib.suppress(OSError):
                    endpoint.rmdir()  # only when empty
            with contextlib.suppress(OSError):
                runtime.rmdir()
        return deleted


def _digest(name: str) -> str:
    return hashlib.sha256(name.encode()).hexdigest()[:32]


def _parse(line: bytes) -> LogEvent | None:
    try:
        timestamp, seq, message = json.loads(line)
    except (ValueError, TypeError):
        return None
    if not (isinstance(timestamp, int) and isinstance(seq, int) and isinstance(message, str)):
        return None
    return LogEvent(timestamp, seq, message)


def _first_event(path: Path) -> LogEvent | None:
    try:
        with open(path, "rb") as source:
            return _parse(source.readline())
    except OSError:
        return None


def _last_event(path: Path) -> LogEvent | None:
    """The last whole event of a segment, reading only its end."""
    try:
        with open(path, "rb") as source:
            size = source.seek(0, os.SEEK_END)
            back = min(size, 4096)
            while True:
                source.seek(size - back)
                lines = source.read(back).splitlines()
                for line in reversed(lines[1:] if back < size else lines):
                    event = _parse(line)
                    if event is not None:
                        return event
                if back >= size:
                    return None
                back = min(size, back * 4)
    except OSError:
        return None


def _ends_whole(path: Path) -> bool:
    """Whether a segment ends with a whole line (a crash can leave half of one)."""
    try:
        with open(path, "rb") as source:
            if source.seek(0, os.SEEK_END) == 0:
                return True
            source.seek(-1, os.SEEK_END)
            return source.read(1) == b"\n"
    except OSError:
        return False


def _first_seq(path: Path) -> int:
    found = _SEGMENT.match(path.name)
    return int(found.group(1)) if found else 0


def _read_meta(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _subdirs(path: Path) -> list[Path]:
    try:
        return sorted(p for p in path.iterdir() if p.is_dir() and not p.is_symlink())
    except OSError:
        return []


def _subdirs_all(runtime: Path) -> list[Path]:
    return [s for e in _subdirs(runtime) for s in _subdirs(e)]


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except OSError:
        return 0


def _mtime(path: Path) -> float:
    try:
        return path.stat().st_mtime
    except OSError:
        return 0.0


def _newest_mtime(directory: Path) -> float:
    """When the stream's newest segment was last written (its directory's mtime when it has none)."""
    try:
        segments = [p for p in directory.iterdir() if _SEGMENT.match(p.name)]
    except OSError:
        return 0.0
    return max((_mtime(p) for p in segments), default=_mtime(directory))


def _dir_bytes(directory: Path) -> int:
    try:
        return sum(_size(p) for p in directory.iterdir())
    except OSError:
        return 0
