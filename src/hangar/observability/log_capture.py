"""Copies each live session's output file into its log stream, line by line, stamped when read.

A sandbox writes its stdout and stderr to one file of its own (``Sandbox.log_path``, on its size-capped writable
area); the file is deleted with the sandbox. One task polls every captured file (``INTERVAL_S``), reads what was
appended (at most ``MAX_READ`` a tick and file, so a flood cannot stall the loop) and appends it to the store as
events: one per line, a line longer than ``MAX_EVENT`` split, a last line without its newline written once it stops
growing. A backlog larger than half the session's budget is skipped down to that half (it would be rotated out
anyway) and a line says how much. ``end`` reads the rest before the sandbox's files go.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import stat
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from hangar.observability.logs import LogStore, StreamWriter

log = logging.getLogger("hangar.logs")

INTERVAL_S = 0.25
MAX_READ = 1024 * 1024
MAX_EVENT = 16 * 1024
SWEEP_EVERY_S = 60.0


@dataclass
class _Source:
    path: Path
    writer: StreamWriter
    offset: int = 0
    partial: bytes = b""
    partial_ticks: int = 0
    events: list[tuple[int, str]] = field(default_factory=list)
    open: bool = True
    lock: threading.Lock = field(default_factory=threading.Lock)  # the poller's pass or the final read, not both


class LogCapture:
    """Follows the output files of live sessions into ``store``; one poller for all of them."""

    def __init__(self, store: LogStore, interval: float = INTERVAL_S) -> None:
        self.store = store
        self.interval = interval
        self._sources: dict[object, _Source] = {}
        # Guards the table only, never file I/O: begin/end run on the event loop, the poller in a worker thread.
        self._lock = threading.Lock()
        self._task: asyncio.Task[None] | None = None
        self._swept = 0.0

    def begin(self, key: object, path: Path, runtime_id: str, endpoint: str, session_id: str) -> None:
        """Start following ``path`` (from its beginning: a warm spare's start-up lines belong to its session)."""
        try:
            writer = self.store.open_writer(runtime_id, endpoint, session_id, time.time())
        except (OSError, ValueError) as exc:
            log.warning("session %s: its output is not kept: %s", session_id, exc)
            return
        with self._lock:
            self._sources[key] = _Source(path, writer)
        if self._task is None or self._task.done():
            self._task = asyncio.create_task(self._poll(), name="session-log-capture")

    async def end(self, key: object) -> None:
        """Read what is left of ``key``'s file and stop following it (before the sandbox's files are deleted)."""
        with self._lock:
            source = self._sources.pop(key, None)
        if source is not None:
            await asyncio.to_thread(self._finish, source)

    async def stop(self) -> None:
        """Shutdown: every source read to its end, the poller stopped."""
        with self._lock:
            sources, self._sources = list(self._sources.values()), {}
        for source in sources:
            await asyncio.to_thread(self._finish, source)
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def _poll(self) -> None:
        while True:
            await asyncio.sleep(self.interval)
            try:
                await asyncio.to_thread(self.tick)
            except Exception:
                log.exception("session log capture failed")

    def tick(self) -> None:
        """One pass over every followed file."""
        with self._lock:
            sources = list(self._sources.values())
        for source in sources:
            with source.lock:
                if source.open:
                    self._read(source, final=False)
        now = time.monotonic()
        if now - self._swept >= SWEEP_EVERY_S:
            self._swept = now
            self.store.sweep()

    def _finish(self, source: _Source) -> None:
        with source.lock:
            source.open = False
            try:
                self._read(source, final=True)
            finally:
                self.store.close_writer(source.writer)

    def _read(self, source: _Source, final: bool) -> None:
        if not final and not source.partial and _unchanged(source):
            return  # the common case, one lstat: most sessions print nothing most of the time
        data, now = _read_new(source, final), int(time.time() * 1000)
        self._split(source, data, now, final)
        if source.events:
            try:
                source.writer.append(source.events)
            except OSError as exc:
                log.warning("session log not written: %s", exc)
            source.events = []

    @staticmethod
    def _split(source: _Source, data: bytes, now: int, final: bool) -> None:
        text = source.partial + data
        lines = text.split(b"\n")
        rest = lines.pop()
        for line in lines:
            _emit(source, line, now)
        if rest and (final or (not data and source.partial_ticks >= 1) or len(rest) >= MAX_EVENT):
            _emit(source, rest, now)
            rest = b""
        source.partial_ticks = source.partial_ticks + 1 if rest and not data else 0
        source.partial = rest


def _emit(source: _Source, line: bytes, now: int) -> None:
    line = line.rstrip(b"\r")
    if not line:
        return  # CloudWatch has no empty events
    for start in range(0, len(line), MAX_EVENT):
        source.events.append((now, line[start : start + MAX_EVENT].decode(errors="replace")))


def _unchanged(source: _Source) -> bool:
    try:
        return os.lstat(source.path).st_size == source.offset
    except OSError:
        return True


def _read_new(source: _Source, final: bool) -> bytes:
    """What was appended since the last read; never follows a link or blocks on a FIFO put in the file's place."""
    try:
        fd = os.open(source.path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError:
        return b""
    with open(fd, "rb", buffering=0) as reader:
        status = os.fstat(fd)
        if not stat.S_ISREG(status.st_mode):
            return b""
        size = status.st_size
        if size < source.offset:  # replaced or truncated: start over
            source.offset = 0
        backlog = size - source.offset
        half = source.writer.session_bytes // 2
        if backlog > half:  # only half is kept: the note of the skip must not rotate out at once
            skipped = backlog - half
            source.offset += skipped
            source.partial = b""
            note = f"[hangar: {skipped} bytes of output skipped: more than the session's log]"
            source.events.append((int(time.time() * 1000), note))
        data = b""
        while source.offset < size:
            reader.seek(source.offset)
            chunk = reader.read(min(size - source.offset, MAX_READ))
            if not chunk:
                break
            source.offset += len(chunk)
            data += chunk
            if not final:
                break
        return data
