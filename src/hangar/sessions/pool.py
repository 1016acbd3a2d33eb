"""Warm pool: sandboxes already started and answering ``/ping``, kept per (runtime, version) for new sessions.

A spare is a cold-path sandbox started ahead of time: same backend, same ``SandboxSpec`` (fresh id, uid lease,
cgroup, namespaces), never one that served a session before. A sandbox knows nothing about its session until a
request names it, so any spare of a version fits any session of that version, and is used once.

Which versions get spares:

- with a ``served`` source (wired by ``sessions/setup.py`` from the control plane): every version an endpoint
  serves, filled in the background as soon as it is READY behind an endpoint and drained as soon as no endpoint
  serves it (runtime deleted or updated and its endpoints moved on);
- without one (a bare manager): a version gets spares after its first session and keeps them until its idle
  timeout passes without a new session.

Sizes: ``warm_pool_size`` for every runtime, ``warm_pool_runtimes`` (runtime name -> size) per runtime: floors. A
version that cannot fork from a warm template (its template reported it unsafe) gets one cold spare even at size 0,
so its first caller does not wait for a cold start either (``cold_spares``, on by default). Above the floors, with
``spares=auto`` (the default), a busy version keeps *forked spares*, as many as ``sessions/spares.py`` sizes from its
arrival rate: they are forked from its live template (never started cold), fit in ``spares_memory_mib`` together
(each one's cgroup usage, measured once it is ready) and are trimmed when the size falls. Spares do not count as
sessions (``max_sessions_per_runtime`` is about sessions), but spares plus sessions never exceed ``max_sessions``.
Fills, refills and drains run beside the request path; a claim is a dict lookup. A refill beyond the floors waits
while a session start is in flight (at most ``BUSY_HOLD_S``) or the host is saturated (more runnable tasks than
``SATURATED_PER_CPU`` per CPU in ``/proc/loadavg``; at most ``SATURATED_HOLD_S``), so it does not compete with the
requests it is for, and a saturated host still gets a version's spares back at about one a second. Except while the
version is *short*: a session of it found no spare since it last had its size. Then every arrival forks on its own
request path anyway, so a spare forked now adds no work, it only moves a fork ahead of the session that will claim
it: the refill does not wait, and up to ``SHORT_PARALLEL`` of the version's forked spares start at once (one at a
time, the refill rate is one fork's latency, far below a churning version's arrival rate).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import os
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from hangar.domain.invocation import InvocationTarget
from hangar.sandbox.ahead import AHEAD
from hangar.sandbox.base import Sandbox
from hangar.sessions.agent_http import AgentHttp
from hangar.sessions.spares import SpareSizer

log = logging.getLogger("hangar.sessions")

RECONCILE_S = 1.0  # how often the served versions are re-read
MAX_BACKOFF_S = 60.0  # a version whose spares fail to start is retried after 1, 2, 4 ... up to 60 s
SATURATED_PER_CPU = 2  # runnable tasks per CPU above which forked spares are not refilled
GUARD_POLL_S = 0.02  # how often a held-back refill looks again
BUSY_HOLD_S = 0.25  # the longest a refill waits for session starts in flight (under steady load there always is one)
SATURATED_HOLD_S = 1.0  # ... and for a saturated host: a shared host may stay saturated, spares still trickle in
SHORT_PARALLEL = 4  # forked spares a short version starts at once (the template forks them one at a time anyway)


@dataclass
class Launched:
    """A sandbox answering ``/ping``, and how it was started: ``fork`` (from a warm template) or ``cold``."""

    sandbox: Sandbox
    client: AgentHttp
    kind: str
    cold_reason: str | None = None


@dataclass
class Spare:
    target: InvocationTarget
    sandbox: Sandbox
    client: AgentHttp
    kind: str = "cold"  # how the spare itself was started
    started_at: float = field(default_factory=time.time)
    auto: bool = False  # kept by ``spares=auto`` above the version's floor (counted in the memory budget)
    memory_bytes: int = 0  # its cgroup usage once ready (auto spares)


Launch = Callable[[InvocationTarget], Awaitable[Launched]]
Served = Callable[[], Awaitable[list[InvocationTarget]]]
PoolKey = tuple[str, str]  # (runtime id, version)


def pool_key(target: InvocationTarget) -> PoolKey:
    return (target.runtime_id, target.version)


class WarmPool:
    def __init__(
        self,
        size_of: Callable[[InvocationTarget], int],
        launch: Launch,
        has_room: Callable[[int], bool],
        discard: Callable[[list[Spare]], None],
        idle_scale: float = 1.0,
    ) -> None:
        self._size_of = size_of
        self._launch = launch
        self._has_room = has_room  # given how many spares exist or are starting: may one more start?
        self._discard = discard  # stops sandboxes in the background
        self._idle_scale = idle_scale
        self.served: Served | None = None
        self.cold_spares: Callable[[InvocationTarget], bool] | None = None  # is this version unable to fork?
        self.sizer: SpareSizer | None = None  # forked spares above the floors (spares=auto)
        self.fork_ready: Callable[[InvocationTarget], bool] = lambda _: False  # does the version have a live template?
        self.busy: Callable[[], bool] = lambda: False  # is a session start in flight?
        self.hits = 0  # new sessions of a version with spares wanted that claimed one
        self.misses = 0  # ... that found none ready
        self.on_claim: Callable[[str], None] = lambda _: None  # hit | miss, for the metric
        self._spares: dict[PoolKey, list[Spare]] = {}
        self._wanted: dict[PoolKey, tuple[InvocationTarget, float]] = {}  # key -> (target, wanted until)
        self._filling: dict[PoolKey, asyncio.Task[None]] = {}
        self._wake: dict[PoolKey, asyncio.Event] = {}  # a running fill looks again (a spare was claimed)
        self._short: set[PoolKey] = set()  # versions whose sessions missed since they last had their size
        self._launching = 0
        self._backoff: dict[PoolKey, tuple[float, float]] = {}  # key -> (no new start before, last delay)
        self._loop: asyncio.Task[None] | None = None
        self.claims: Counter[str] = Counter()  # start_kind -> sessions started that way (warm | cold)

    def count(self) -> int:
        return sum(len(spares) for spares in self._spares.values())

    def _floor(self, target: InvocationTarget) -> int:
        """The configured size; at least one spare for a version that cannot fork (hides its cold start)."""
        size = self._size_of(target)
        if size == 0 and self.cold_spares is not None and self.cold_spares(target):
            return 1
        return size

    def _size(self, target: InvocationTarget) -> int:
        """The floor, or more forked spares when the arrival rate asks for them."""
        auto = self.sizer.size(target) if self.sizer is not None else 0
        return max(self._floor(target), auto)

    def _auto_room(self) -> bool:
        """May one more forked spare start within the memory budget? (a starting one counts as the largest)"""
        if self.sizer is None or self.sizer.memory_bytes <= 0:
            return False
        auto = [s.memory_bytes for group in self._spares.values() for s in group if s.auto]
        return sum(auto) + max(auto, default=0) * (1 + self._launching) <= self.sizer.memory_bytes

    def describe(self) -> dict[str, object]:
        """For the operator API: ready spares per version and how sessions were started."""
        return {
            "ready": {
                f"{rid}/{version}": [s.sandbox.id for s in spares] for (rid, version), spares in self._spares.items()
            },
            "spareKinds": {
                f"{rid}/{version}": [s.kind for s in spares] for (rid, version), spares in self._spares.items()
            },
            "sizes": {f"{rid}/{version}": self._size(target) for (rid, version), (target, _) in self._wanted.items()},
            "starting": self._launching,
            "sessionsStarted": dict(self.claims),
            "claims": {"hit": self.hits, "miss": self.misses},
            "autoSpares": self.sizer.describe() if self.sizer is not None else {"mode": "off"},
        }

    # --- the request path: a lookup, nothing else

    def take(self, target: InvocationTarget) -> tuple[Spare | None, list[Spare]]:
        """A live spare of the target's version (or None), and dead spares found on the way (to be stopped)."""
        key = pool_key(target)
        spares = self._spares.get(key, [])
        dead: list[Spare] = []
        while spares:
            spare = spares.pop()
            if spare.sandbox.alive():
                self.hits += 1
                self.on_claim("hit")
                return spare, dead
            dead.append(spare)
        if key in self._wanted:
            self.misses += 1
            self.on_claim("miss")
            self._short.add(key)
            if self.sizer is not None:
                self.sizer.missed(target)
        return None, dead

    def want(self, target: InvocationTarget) -> None:
        """A session of ``target`` started: refill its version (and, with no served source, keep it wanted)."""
        key = pool_key(target)
        if self.served is None and self._size(target) > 0:
            until = time.time() + target.idle_timeout_s * self._idle_scale
            self._wanted[key] = (target, max(until, self._wanted.get(key, (target, 0.0))[1]))
        elif self.served is not None and key not in self._wanted and self._size(target) > 0:
            self._wanted[key] = (target, math.inf)  # the next reconcile drops it if no endpoint serves it
        if key in self._wanted:
            self._fill_soon(key)

    # --- background work

    def start(self) -> None:
        """Follow the served versions (only when a source is wired; otherwise sessions drive the pool)."""
        if self.served is not None and self._loop is None:
            self._loop = asyncio.create_task(self._run(), name="hangar-warm-pool")

    async def _run(self) -> None:
        while True:
            try:
                await self.reconcile()
            except Exception:
                log.exception("warm pool reconcile failed")
            await asyncio.sleep(RECONCILE_S)

    async def reconcile(self) -> None:
        """Want exactly the served versions that have a pool size; drop the rest; fill what is short."""
        if self.served is None:
            return
        targets = await self.served()
        self._wanted = {pool_key(t): (t, math.inf) for t in targets if self._size(t) > 0}
        self.sweep(time.time())

    def sweep(self, now: float) -> None:
        """Stop spares that died or whose version is no longer wanted; start refills for wanted versions."""
        for key, (_, until) in list(self._wanted.items()):
            if until <= now:
                del self._wanted[key]
        for key in [k for k in self._backoff if k not in self._wanted]:
            del self._backoff[key]
        self._short &= set(self._wanted)
        gone: list[Spare] = []
        for key, spares in list(self._spares.items()):
            keep = [s for s in spares if key in self._wanted and s.sandbox.alive()]
            size = self._size(self._wanted[key][0]) if keep else 0
            keep = keep[len(keep) - size :] if size < len(keep) else keep  # the size fell: the oldest go
            gone += [s for s in spares if s not in keep]
            if keep:
                self._spares[key] = keep
            else:
                del self._spares[key]
        if gone:
            log.info("warm pool: stopping %d spare sandboxes (died, no longer served, or beyond the size)", len(gone))
            self._discard(gone)
        for key in self._wanted:
            self._fill_soon(key)

    def _fill_soon(self, key: PoolKey) -> None:
        if key in self._filling:
            self._wake[key].set()
            return
        if self._backoff.get(key, (0.0, 0.0))[0] > time.monotonic():
            return
        target, _ = self._wanted[key]
        if len(self._spares.get(key, [])) >= self._size(target):
            return
        self._wake[key] = asyncio.Event()
        task = asyncio.create_task(self._fill(key), name=f"warm-pool-{key[0]}-v{key[1]}")
        self._filling[key] = task
        task.add_done_callback(lambda _: self._done_filling(key))

    def _done_filling(self, key: PoolKey) -> None:
        self._filling.pop(key, None)
        self._wake.pop(key, None)

    async def _fill(self, key: PoolKey) -> None:
        """Start spares until the version has its size (or the pool hits ``max_sessions``): one at a time, or up to
        ``SHORT_PARALLEL`` forked ones at once while the version is short."""
        launches: set[asyncio.Task[bool]] = set()
        held = False  # the next forked spare has waited for a quiet moment already
        try:
            while key in self._wanted:
                target, _ = self._wanted[key]
                have = len(self._spares.get(key, [])) + len(launches)
                if len(self._spares.get(key, [])) >= self._size(target):
                    self._short.discard(key)
                start = have < self._size(target) and self._has_room(self.count() + self._launching)
                auto = have >= self._floor(target)  # a forked spare the arrival rate asks for, not a floor
                if start and auto:
                    # no live template (a cold spare would not pay), or over budget: the next sweep looks again
                    start = self.fork_ready(target) and self._auto_room()
                    if start and key not in self._short and not launches and not held:
                        await self._quiet()
                        held = True
                        continue  # look again: the size or the spares may have changed meanwhile
                parallel = SHORT_PARALLEL if auto and key in self._short else 1
                if start and len(launches) < parallel:
                    self._launching += 1  # counted before the task runs: ``_has_room`` and ``_auto_room`` see it
                    task = asyncio.create_task(self._start_one(key, target, auto))
                    task.add_done_callback(self._launch_ended)  # also when cancelled before it ran
                    launches.add(task)
                    held = False
                    continue
                if not launches:
                    return
                wake = self._wake[key]
                wake.clear()
                woken = asyncio.create_task(wake.wait())
                try:
                    done, _ = await asyncio.wait({*launches, woken}, return_when=asyncio.FIRST_COMPLETED)
                finally:
                    woken.cancel()
                launches -= done
                if any(task is not woken and not task.result() for task in done):
                    await asyncio.gather(*launches, return_exceptions=True)  # a failure: back off from here
                    launches.clear()
                    return
        finally:
            for task in launches:
                task.cancel()
            if launches:
                await asyncio.gather(*launches, return_exceptions=True)

    def _launch_ended(self, _: asyncio.Task[bool]) -> None:
        self._launching -= 1

    async def _start_one(self, key: PoolKey, target: InvocationTarget, auto: bool) -> bool:
        """Launch one spare and keep it; False when it failed to start (the version backs off)."""
        AHEAD.set(True)  # this task's own context: sessions' forks go before it at the template
        began = time.monotonic()
        try:
            launched = await self._launch(target)
        except Exception as exc:  # a version that cannot start: its sessions will report why
            delay = min(MAX_BACKOFF_S, 2 * self._backoff.get(key, (0.0, RECONCILE_S / 2))[1])
            self._backoff[key] = (time.monotonic() + delay, delay)
            log.warning("warm pool for %s v%s: a spare failed to start (retry in %.0f s): %s", *key, delay, exc)
            return False
        self._backoff.pop(key, None)
        spare = Spare(target, launched.sandbox, launched.client, launched.kind, auto=auto)
        if auto and self.sizer is not None and launched.kind == "fork":
            self.sizer.refilled(target, time.monotonic() - began)
        if auto:
            spare.memory_bytes = await _memory(spare.sandbox)
        if key not in self._wanted:  # drained while this one started
            self._discard([spare])
            return True
        self._spares.setdefault(key, []).append(spare)
        log.info("warm pool: sandbox %s (%s) ready for %s v%s", spare.sandbox.id, spare.kind, key[0], key[1])
        return True

    async def _quiet(self) -> None:
        """Hold a forked spare's refill while a session start is in flight (up to ``BUSY_HOLD_S``) or the host is
        saturated (up to ``SATURATED_HOLD_S``): under load, a version's spares refill at most about once a second."""
        began = time.monotonic()
        while True:
            waited = time.monotonic() - began
            if not ((self.busy() and waited < BUSY_HOLD_S) or (waited < SATURATED_HOLD_S and _saturated())):
                return
            await asyncio.sleep(GUARD_POLL_S)

    async def close(self) -> list[Spare]:
        """Stop following and filling; remove and return every spare (the caller stops them)."""
        if self._loop is not None:
            self._loop.cancel()
            with contextlib.suppress(BaseException):
                await self._loop
            self._loop = None
        self._wanted.clear()
        tasks = list(self._filling.values())
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(BaseException):
                await task
        spares = [s for group in self._spares.values() for s in group]
        self._spares.clear()
        return spares


async def _memory(sandbox: Sandbox) -> int:
    """The spare's memory (its cgroup's usage: the pages it touched since the fork)."""
    try:
        return (await sandbox.stats()).memory_bytes
    except Exception:  # a spare that died already: the next sweep removes it
        return 0


def _saturated() -> bool:
    """More runnable tasks than ``SATURATED_PER_CPU`` per CPU right now (``/proc/loadavg``'s fourth field)."""
    try:
        with open("/proc/loadavg", encoding="ascii") as loadavg:
            runnable = int(loadavg.read().split()[3].split("/")[0]) - 1  # less this reader
    except (OSError, ValueError, IndexError):
        return False
    return runnable > SATURATED_PER_CPU * (os.cpu_count() or 1)
