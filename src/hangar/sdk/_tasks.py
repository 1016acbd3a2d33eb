"""Registry of the agent's background work, which turns ``/ping`` to ``HealthyBusy`` while anything runs.

Thread-safe: tasks are added from handler threads, the worker loop and user threads alike.
"""

from __future__ import annotations

import logging
import secrets
import threading
import time
from dataclasses import dataclass, field
from typing import Any

__all__ = ["AsyncTaskRegistry"]


@dataclass(frozen=True)
class _Task:
    name: str
    start_time: float
    metadata: dict[str, Any] | None = field(default=None)


class AsyncTaskRegistry:
    """``add`` returns an int id that ``complete`` takes back; ``info`` is the shape of the ``job_status`` action."""

    def __init__(self, logger: logging.Logger) -> None:
        self._logger = logger
        self._lock = threading.Lock()
        self._tasks: dict[int, _Task] = {}

    def __bool__(self) -> bool:
        return bool(self._tasks)

    def __len__(self) -> int:
        return len(self._tasks)

    def add(self, name: str, metadata: dict[str, Any] | None = None) -> int:
        with self._lock:
            task_id = secrets.randbits(63)
            while task_id in self._tasks:
                task_id = secrets.randbits(63)
            self._tasks[task_id] = _Task(name=name, start_time=time.time(), metadata=metadata or None)
        self._logger.info("Async task started: %s (ID: %s)", name, task_id)
        return task_id

    def complete(self, task_id: int) -> bool:
        with self._lock:
            task = self._tasks.pop(task_id, None)
        if task is None:
            self._logger.warning("Attempted to complete unknown task ID: %s", task_id)
            return False
        duration = time.time() - task.start_time
        self._logger.info("Async task completed: %s (ID: %s, Duration: %.2fs)", task.name, task_id, duration)
        return True

    def info(self) -> dict[str, Any]:
        now = time.time()
        with self._lock:
            tasks = list(self._tasks.values())
        return {
            "active_count": len(tasks),
            "running_jobs": [{"name": task.name, "duration": now - task.start_time} for task in tasks],
        }
