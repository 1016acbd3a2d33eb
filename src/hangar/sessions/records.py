"""A small file that lets the operator API report sessions of a previous Hangar process as Terminated.

Sessions do not survive a restart (their sandboxes are ended by ``cleanup_orphans``); the table itself lives in
memory. This file only keeps the descriptions of live and recently ended sessions, rewritten atomically when a
session starts or ends (never per request). Each description is serialized once, when its session starts or ends,
so a rewrite joins strings: with 1,000 live sessions, describing and encoding them all for every start or end took
the event loop ~25 % of the server's time while sessions opened.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import time
from collections import deque
from collections.abc import Hashable
from pathlib import Path

log = logging.getLogger("hangar.sessions")

KEEP_TERMINATED = 200


class SessionRecords:
    def __init__(self, path: Path) -> None:
        self.path = path
        self.terminated: deque[dict[str, object]] = deque(maxlen=KEEP_TERMINATED)
        self._terminated_json: deque[str] = deque(maxlen=KEEP_TERMINATED)  # the same records, encoded
        self._live: dict[Hashable, str] = {}  # live sessions' records as they started, encoded
        self._lock = asyncio.Lock()

    def load_previous(self) -> int:
        """Read what the previous process left; its live sessions are now Terminated. Returns how many."""
        try:
            data = json.loads(self.path.read_text())
        except FileNotFoundError:
            return 0
        except (OSError, ValueError):
            log.warning("ignoring unreadable session records at %s", self.path)
            return 0
        for record in data.get("terminated", []):
            if isinstance(record, dict):
                self.remember_ended(record)
        orphaned = [r for r in data.get("live", []) if isinstance(r, dict)]
        now = time.time()
        for record in orphaned:
            record.update(state="Terminated", endedAt=now, endReason="Hangar restarted", inflight=0)
            self.remember_ended(record)
        return len(orphaned)

    def started(self, key: Hashable, record: dict[str, object]) -> None:
        """A session started: its record is in every save until it ends."""
        self._live[key] = json.dumps(record)

    def remember_ended(self, record: dict[str, object], key: Hashable = None) -> None:
        """A session ended (``key``: the one ``started`` was told), or one of a previous process is reported."""
        self._live.pop(key, None)
        self.terminated.append(record)
        self._terminated_json.append(json.dumps(record))

    async def save(self) -> None:
        """Write the live and the recently ended records (coalesced by the caller; the write in a thread)."""
        live, ended = ", ".join(self._live.values()), ", ".join(self._terminated_json)
        document = f'{{"live": [{live}], "terminated": [{ended}]}}'
        async with self._lock:
            await asyncio.to_thread(self._write, document)

    def _write(self, document: str) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        temporary = self.path.with_suffix(".tmp")
        temporary.write_text(document)
        os.replace(temporary, self.path)
