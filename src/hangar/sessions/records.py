"""A small file that lets the operator API report sessions of a previous Hangar process as Terminated.

Sessions do not survive a restart (their sandboxes are ended by ``cleanup_orphans``); the table itself lives in
memory. This file only keeps the descriptions of live and recently ended sessions, rewritten atomically when a
session starts or ends (never per request).
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import time
from collections import deque
from pathlib import Path

log = logging.getLogger("hangar.sessions")

KEEP_TERMINATED = 200


class SessionRecords:
    def __init__(self, path: Path) -> None:
        self.path = path
        self.terminated: deque[dict[str, object]] = deque(maxlen=KEEP_TERMINATED)
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
                self.terminated.append(record)
        orphaned = [r for r in data.get("live", []) if isinstance(r, dict)]
        now = time.time()
        for record in orphaned:
            record.update(state="Terminated", endedAt=now, endReason="Hangar restarted", inflight=0)
            self.terminated.append(record)
        return len(orphaned)

    def remember_ended(self, record: dict[str, object]) -> None:
        self.terminated.append(record)

    async def save(self, live: list[dict[str, object]]) -> None:
        document = json.dumps({"live": live, "terminated": list(self.terminated)})
        async with self._lock:
            await asyncio.to_thread(self._write, document)

    def _write(self, document: str) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        temporary = self.path.with_suffix(".tmp")
        temporary.write_text(document)
        os.replace(temporary, self.path)
