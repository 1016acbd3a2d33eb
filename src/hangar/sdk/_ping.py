"""The agent's health as ``/ping`` reports it: ``Healthy``, or ``HealthyBusy`` while background work runs.

A runtime reaps idle sessions; ``HealthyBusy`` is how an agent says "I look idle but I am working". The status
comes from, in order of precedence: a status forced by the application, a custom ``@app.ping`` function, and
otherwise the async-task registry.
"""

from __future__ import annotations

import enum
import inspect
import logging
import threading
import time
from collections.abc import Callable
from typing import Any

__all__ = ["PingStatus", "PingTracker"]


class PingStatus(str, enum.Enum):  # noqa: UP042 - str() and format() as in the reference SDK
    """The two values the AgentCore ``/ping`` contract knows; there is deliberately no "Unhealthy"."""

    HEALTHY = "Healthy"
    HEALTHY_BUSY = "HealthyBusy"


class PingTracker:
    """Computes the current status and remembers when it last changed (``time_of_last_update``)."""

    def __init__(self, is_busy: Callable[[], bool], logger: logging.Logger) -> None:
        self._is_busy = is_busy
        self._logger = logger
        self._lock = threading.Lock()
        self.forced: PingStatus | None = None
        self.custom: Callable[[], PingStatus | str] | None = None
        self._last_status: PingStatus | None = None
        self._last_change = time.time()

    @property
    def last_change(self) -> int:
        """Unix seconds at which the reported status last changed (first computed status counts as a change)."""
        return int(self._last_change)

    def current(self) -> PingStatus:
        status = self.forced or self._from_custom() or self._automatic()
        with self._lock:
            if status != self._last_status:
                self._last_status = status
                self._last_change = time.time()
        return status

    def _from_custom(self) -> PingStatus | None:
        if self.custom is None:
            return None
        try:
            result: Any = self.custom()  # the application's code: checked for what it may return despite its type
            if result is None:  # "no opinion": fall through to the automatic status
                return None
            if inspect.iscoroutine(result):
                result.close()  # /ping never awaits; say so instead of leaking an un-awaited coroutine
                raise TypeError("the ping function must be synchronous")
            return result if isinstance(result, PingStatus) else PingStatus(result)
        except Exception as exc:  # a broken health function must not take /ping down
            self._logger.warning("Custom ping handler failed, using automatic status: %s: %s", type(exc).__name__, exc)
            return None

    def _automatic(self) -> PingStatus:
        return PingStatus.HEALTHY_BUSY if self._is_busy() else PingStatus.HEALTHY
