"""Which of the followed files were written to: one inotify descriptor for all of them, read on the event loop.

Polling costs one ``lstat`` per file and pass whether anything was written or not (4,000 a second for 1,000 idle
sessions at four passes a second); here a write queues an ``IN_MODIFY`` event (the kernel merges repeats not yet
read), so a quiet file costs nothing. ``add`` says False where a file cannot be watched (no inotify instance left,
the file not there yet), and a file unlinked, renamed or changed in mode stops being watched (``watches`` says so):
the caller polls those by path, as before. A queue overflow reports every file changed.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Hashable
from pathlib import Path

import inotify_simple  # type: ignore[import-untyped]  # the package ships no type information

log = logging.getLogger("hangar.logs")

_flags = inotify_simple.flags
# A write, or the file unlinked, renamed, its mode changed (it may have been replaced: the path is polled from then on).
WATCHED = _flags.MODIFY | _flags.ATTRIB | _flags.MOVE_SELF | _flags.DELETE_SELF | _flags.DONT_FOLLOW
REPLACED = _flags.ATTRIB | _flags.MOVE_SELF | _flags.DELETE_SELF | _flags.IGNORED


class FileWatch:
    """Calls ``on_change(keys)`` on the event loop with the keys of the files written to since the last call."""

    def __init__(self, on_change: Callable[[set[Hashable]], None]) -> None:
        self.on_change = on_change
        self._inotify: inotify_simple.INotify | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._failed = False
        self._keys: dict[int, set[Hashable]] = {}  # watch descriptor -> keys (one file followed twice shares one)
        self._watches: dict[Hashable, int] = {}

    def add(self, key: Hashable, path: Path) -> bool:
        """Watch ``path`` for ``key`` (on the event loop); False: it is not watched, poll it."""
        inotify = self._open()
        if inotify is None:
            return False
        try:
            wd = inotify.add_watch(path, WATCHED)
        except OSError:
            return False
        self._keys.setdefault(wd, set()).add(key)
        self._watches[key] = wd
        return True

    def remove(self, key: Hashable) -> None:
        wd = self._watches.pop(key, None)
        if wd is None:
            return
        keys = self._keys.get(wd, set())
        keys.discard(key)
        if not keys:
            self._keys.pop(wd, None)
            if self._inotify is not None:
                with contextlib.suppress(OSError):  # already gone with its file
                    self._inotify.rm_watch(wd)

    def watches(self, key: Hashable) -> bool:
        return key in self._watches

    def watching(self) -> int:
        """How many files are watched (the rest are polled)."""
        return len(self._watches)

    def close(self) -> None:
        if self._inotify is not None:
            if self._loop is not None and not self._loop.is_closed():
                self._loop.remove_reader(self._inotify.fileno())
            self._inotify.close()
            self._inotify = None
        self._keys.clear()
        self._watches.clear()

    def _open(self) -> inotify_simple.INotify | None:
        if self._inotify is None and not self._failed:
            try:
                self._inotify = inotify_simple.INotify(nonblocking=True)
            except OSError as exc:  # fs.inotify.max_user_instances reached: every file is polled instead
                self._failed = True
                log.warning("session logs are polled, inotify is not available: %s", exc)
                return None
            self._loop = asyncio.get_running_loop()
            self._loop.add_reader(self._inotify.fileno(), self._read)
        return self._inotify

    def _read(self) -> None:
        if self._inotify is None:
            return
        try:
            events = self._inotify.read(timeout=0)
        except OSError:
            return
        changed: set[Hashable] = set()
        for event in events:
            if event.mask & _flags.Q_OVERFLOW:
                changed.update(self._watches)
                continue
            keys = self._keys.get(event.wd, set())
            changed.update(keys)
            if event.mask & REPLACED and keys:  # its keys are polled from now on
                for key in list(keys):
                    self.remove(key)
        if changed:
            self.on_change(changed)
