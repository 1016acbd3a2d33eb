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


class LogCapture:
    """Follows the output files of live sessions into ``store``; one poller for all of them."""

    def __init__(self, store: LogStore, interval: float = INTERVAL_S) -> None:
        self.store = store
        self.interval = interval
        self._sources: dict[object, _Source] = {}
        self._lock = threading.Lock()  # the poller runs in a worker thread; begin/end run on the loop
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
            for source in self._sources.values():
                self._read(source, final=False)
            now = time.monotonic()
            if now - self._swept >= SWEEP_EVERY_S:
                self._swept = now
                self.store.sweep()

    def _finish(self, source: _Source) -> None:
        with self._lock:
            try:
                self._read(source, final=True)
            finally:
                self.store.close_writer(source.writer)

    def _read(self, source: _Source, final: bool) -> None:
        try:
            size = os.stat(source.path).st_size
        except OSError:
            size = source.offset
        if size < source.offset:  # replaced or truncated: start over
            source.offset = 0
        backlog = size - source.offset
        now = int(time.time() * 1000)
        if backlog > source.writer.session_bytes // 2:  # half: the note of the skip must not rotate out at once
            skipped = backlog - source.writer.session_bytes // 2
            source.offset += skipped
            source.partial = b""
            source.events.append((now, f"[hangar: {skipped} bytes of output skipped: more than the session's log]"))
        data = b""
        while source.offset < size:
            try:
                with open(source.path, "rb") as reader:
                    reader.seek(source.offset)
                    chunk = reader.read(min(size - source.offset, MAX_READ))
            except OSError:
                break
            if not chunk:
                break
            source.offset += len(chunk)
            data += chunk
            if not final:
                break
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
