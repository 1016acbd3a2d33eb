"""Copies each live session's output file into its log stream, line by line, stamped when read.

A sandbox writes its stdout and stderr to one file of its own (``Sandbox.log_path``, on its size-capped writable
area); the file is deleted with the sandbox. A file is looked at when it was written to (``FileWatch``: inotify,
so 1,000 quiet sessions cost nothing between writes), at most once every ``INTERVAL_S`` (writes in between are read
in one pass); a file that cannot be watched is polled every ``INTERVAL_S``. A pass reads what was appended (at most
``MAX_READ`` a file, so a flood cannot stall it; the rest on the next pass) and appends it to the store as events:
one per line, a line longer than ``MAX_EVENT`` split, a last line without its newline written once it stops growing
(one more pass without a write). A backlog larger than half the session's budget is skipped down to that half (it
would be rotated out anyway) and a line says how much. ``end`` reads the rest before the sandbox's files go.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import stat
import threading
import time
from collections.abc import Hashable
from dataclasses import dataclass, field
from pathlib import Path

from hangar.observability.file_watch import FileWatch
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
    behind: bool = False  # the last read stopped at MAX_READ: more is there without a new write
    events: list[tuple[int, str]] = field(default_factory=list)
    open: bool = True
    lock: threading.Lock = field(default_factory=threading.Lock)  # the poller's pass or the final read, not both


class LogCapture:
    """Follows the output files of live sessions into ``store``; one watch and one reader for all of them."""

    def __init__(self, store: LogStore, interval: float = INTERVAL_S) -> None:
        self.store = store
        self.interval = interval
        self.passes = 0  # passes made (a quiet capture makes none)
        self._sources: dict[Hashable, _Source] = {}
        self._due: set[Hashable] = set()  # written to (or with a partial line or a backlog): read on the next pass
        self._polled: set[Hashable] = set()  # not watched: read on every pass
        # Guards the tables only, never file I/O: begin/end and the watch run on the event loop, passes in a thread.
        self._lock = threading.Lock()
        self._watch = FileWatch(self._changed)
        self._wakeup: asyncio.Event | None = None
        self._task: asyncio.Task[None] | None = None
        self._swept = 0.0  # the first pass sweeps

    def begin(self, key: Hashable, path: Path, runtime_id: str, endpoint: str, session_id: str) -> None:
        """Start following ``path`` (from its beginning: a warm spare's start-up lines belong to its session)."""
        try:
            writer = self.store.open_writer(runtime_id, endpoint, session_id, time.time())
        except (OSError, ValueError) as exc:
            log.warning("session %s: its output is not kept: %s", session_id, exc)
            return
        watched = self._watch.add(key, path)
        with self._lock:
            self._sources[key] = _Source(path, writer)
            self._due.add(key)
            if not watched:
                self._polled.add(key)
        if self._task is None or self._task.done():
            self._wakeup = asyncio.Event()
            self._task = asyncio.create_task(self._run(), name="session-log-capture")
        self._wake()

    async def end(self, key: Hashable) -> None:
        """Read what is left of ``key``'s file and stop following it (before the sandbox's files are deleted)."""
        self._watch.remove(key)
        with self._lock:
            source = self._sources.pop(key, None)
            self._due.discard(key)
            self._polled.discard(key)
        if source is not None:
            await asyncio.to_thread(self._finish, source)

    async def stop(self) -> None:
        """Shutdown: every source read to its end, the reader stopped."""
        self._watch.close()
        with self._lock:
            sources, self._sources = list(self._sources.values()), {}
            self._due.clear()
            self._polled.clear()
        for source in sources:
            await asyncio.to_thread(self._finish, source)
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    def watched(self) -> int:
        """How many followed files are watched rather than polled."""
        return self._watch.watching()

    def _changed(self, keys: set[Hashable]) -> None:
        """The watch saw writes to ``keys`` (or lost a file: that one is polled from now on)."""
        with self._lock:
            live = keys & self._sources.keys()
            self._due |= live
            self._polled |= {key for key in live if not self._watch.watches(key)}
        if live:
            self._wake()

    def _wake(self) -> None:
        if self._wakeup is not None:
            self._wakeup.set()

    async def _run(self) -> None:
        assert self._wakeup is not None
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wakeup.wait(), SWEEP_EVERY_S)
            await asyncio.sleep(self.interval)  # what else is written meanwhile is read in the same pass
            self._wakeup.clear()
            try:
                if await asyncio.to_thread(self.tick):
                    self._wakeup.set()
            except Exception:
                log.exception("session log capture failed")

    def tick(self) -> bool:
        """One pass over the files written to since the last one and the polled ones; True if another is due."""
        self.passes += 1
        with self._lock:
            keys, self._due = self._due | self._polled, set()
            sources = [(key, self._sources[key]) for key in keys if key in self._sources]
        again: set[Hashable] = set()
        for key, source in sources:
            with source.lock:
                if source.open:
                    self._read(source, final=False)
                    if source.partial or source.behind:
                        again.add(key)
        with self._lock:
            self._due |= again & self._sources.keys()
            due = bool(self._due or self._polled)
        now = time.monotonic()
        if now - self._swept >= SWEEP_EVERY_S:
            self._swept = now
            self.store.sweep()
        return due

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
        source.behind = False
        while source.offset < size:
            reader.seek(source.offset)
            chunk = reader.read(min(size - source.offset, MAX_READ))
            if not chunk:
                break
            source.offset += len(chunk)
            data += chunk
            if not final:
                source.behind = source.offset < size
                break
        return data
