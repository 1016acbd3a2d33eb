"""How many forked spares a version keeps by default (``spares=auto``): sized from its arrival rate.

A forked spare is a session forked ahead from the version's warm template and finished (supervisor and agent
started, answering ``/ping``), so a new session's first byte is one proxied request. It costs about 11 MiB of
private memory, so it is kept only where it pays:

- none for a version without a new session within its idle timeout (it went quiet: its spares are drained), nor
  for one that cannot fork (no live template, a runtime with ``HANGAR_SPARES=off``, or session storage: a spare
  cannot know which session's image to mount, so those sessions take the template's prepared fork instead);
- one once the version has had a new session;
- more when Little's law says one is not enough: the spares being refilled at any moment average ``rate x refill
  time``; ``HEADROOM`` covers bursts. ``rate`` is the new sessions of the last ``spares_window_s``, ``refill time``
  a moving average of how long a spare took to become ready;
- and one more for each miss in the window (a new session that found no spare ready while the version kept some):
  arrivals in bursts (a client that opens sessions two at a time) miss although the mean rate says one is enough.

The count is capped per version (``spares_max_per_version``); ``WarmPool`` caps all of them together by memory
(``spares_memory_mib``, measured per spare) and by ``max_sessions``.
"""

from __future__ import annotations

import math
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

from hangar.config import Settings
from hangar.domain.invocation import InvocationTarget

HEADROOM = 2.0  # spares per expected refill in flight: a Poisson burst of twice the mean is still served warm
FIRST_REFILL_S = 0.1  # refill time assumed before one was measured (a fork is ~25 ms; its agent's /ping after)
REFILL_WEIGHT = 0.3  # weight of the newest refill in the moving average
OPT_OUT_VALUES = {"0", "off", "false", "no"}

Key = tuple[str, str]  # (runtime id, version)


@dataclass
class Arrivals:
    """The new sessions of one version seen lately, and how long its spares took to refill."""

    times: deque[float] = field(default_factory=deque)  # monotonic, within the window
    misses: deque[float] = field(default_factory=deque)  # the same, of sessions that found no spare ready
    last: float = -math.inf
    refill_s: float = FIRST_REFILL_S
    refills: int = 0


class SpareSizer:
    def __init__(
        self,
        settings: Settings,
        forkable: Callable[[InvocationTarget], bool],
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.enabled = settings.spares == "auto"
        self.window_s = settings.spares_window_s
        self.max_per_version = settings.spares_max_per_version
        self.memory_bytes = settings.spares_memory_mib << 20
        self._scale = settings.session_time_scale
        self._forkable = forkable  # has a live template, and no session storage
        self._clock = clock
        self._versions: dict[Key, Arrivals] = {}

    def arrived(self, target: InvocationTarget) -> None:
        """A new session of ``target`` started (claimed a spare or not)."""
        if not self.enabled:
            return
        now = self._clock()
        seen = self._versions.setdefault((target.runtime_id, target.version), Arrivals())
        seen.times.append(now)
        seen.last = now
        self._trim(seen, now)

    def missed(self, target: InvocationTarget) -> None:
        """A new session of ``target`` found no spare ready although the version keeps spares."""
        seen = self._versions.get((target.runtime_id, target.version))
        if seen is not None:
            seen.misses.append(self._clock())

    def refilled(self, target: InvocationTarget, seconds: float) -> None:
        """A spare of ``target`` took ``seconds`` from its launch until its agent answered ``/ping``."""
        seen = self._versions.get((target.runtime_id, target.version))
        if seen is not None:
            weight = 1.0 if seen.refills == 0 else REFILL_WEIGHT
            seen.refill_s += weight * (seconds - seen.refill_s)
            seen.refills += 1

    def size(self, target: InvocationTarget) -> int:
        """How many forked spares ``target``'s version should keep now."""
        if not self.enabled or opted_out(target):
            return 0
        key = (target.runtime_id, target.version)
        seen = self._versions.get(key)
        now = self._clock()
        if seen is None or now - seen.last > target.idle_timeout_s * self._scale:
            self._versions.pop(key, None)  # quiet: forget it (its spares are drained)
            return 0
        if not self._forkable(target):
            return 0
        self._trim(seen, now)
        wanted = math.ceil(self.rate(seen) * seen.refill_s * HEADROOM) + len(seen.misses)
        return max(1, min(self.max_per_version, wanted))

    def rate(self, seen: Arrivals) -> float:
        """New sessions per second over the window."""
        return len(seen.times) / self.window_s

    def _trim(self, seen: Arrivals, now: float) -> None:
        for times in (seen.times, seen.misses):
            while times and times[0] < now - self.window_s:
                times.popleft()

    def describe(self) -> dict[str, object]:
        now = self._clock()
        for seen in self._versions.values():
            self._trim(seen, now)
        return {
            "mode": "auto" if self.enabled else "off",
            "versions": {
                f"{rid}/{version}": {
                    "arrivalsPerSecond": round(self.rate(seen), 3),
                    "refillSeconds": round(seen.refill_s, 4),
                    "missesInWindow": len(seen.misses),
                    "lastArrivalSecondsAgo": round(now - seen.last, 3),
                }
                for (rid, version), seen in self._versions.items()
            },
        }


def opted_out(target: InvocationTarget) -> bool:
    return target.environment.get("HANGAR_SPARES", "").strip().lower() in OPT_OUT_VALUES
