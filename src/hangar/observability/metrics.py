"""Every Prometheus metric of Hangar, in one place, with its labels and their allowed values.

One ``Metrics`` (and one ``CollectorRegistry``, never the process-global default) per server, so several servers
can run in one process (tests). The gateway renders it at ``GET /metrics``.

Labels are low-cardinality by construction: never a runtime, version, session or sandbox id, never a user, never raw
error text. What exists (runtimes, sessions) must not be readable from the exposition, which is public.

Counters and the histogram are moved by the session manager as things happen:

- ``hangar_sessions_started_total{start_kind}``: sessions started; ``start_kind`` = ``warm`` (a warm-pool spare),
  ``fork`` (forked from the version's warm template) or ``cold`` (a fresh sandbox).
- ``hangar_session_cold_fallbacks_total{reason}``: sandboxes (of sessions or warm-pool spares) started cold although
  their version could have been forked; ``reason`` is the class of the cold reason (``reason_class``: its text before
  the first ``:`` or ``(``, digits as ``N``), at most ``MAX_REASONS`` distinct values, later ones count as ``other``.
- ``hangar_session_start_seconds{start_kind}``: from the start of a sandbox launch (a session's or a spare's) until
  its agent answered ``/ping``; ``start_kind`` = ``fork`` | ``cold`` (a warm claim launches nothing).
- ``hangar_warm_pool_claims_total{result}``: new sessions of a version that keeps spares (a floor or ``spares=auto``);
  ``result`` = ``hit`` (claimed a ready spare) | ``miss`` (none was ready: forked or started cold).

Gauges are read from the session manager at scrape time (``SessionCollector``):

- ``hangar_sessions_live{state}``: live sessions; ``state`` = ``active`` | ``idle``.
- ``hangar_warm_pool_spares{state}``: warm-pool sandboxes; ``state`` = ``ready`` | ``starting``.
- ``hangar_templates{state}``: warm templates of served versions; ``state`` = ``alive`` | ``starting`` | ``unsafe``
  (never forked: its sessions start cold) | ``down`` (died or failed to start: restarted after a back-off).

And one gauge of the server process itself, read at scrape time (``TaskCollector``), so a soak can see leaks that
neither RSS nor ``/proc`` shows (``bench/suites/soak.py``):

- ``hangar_asyncio_tasks``: asyncio tasks not yet done on the server's event loop.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Iterator
from typing import TYPE_CHECKING

from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.exposition import choose_encoder

if TYPE_CHECKING:
    from hangar.sessions.manager import SessionManager

START_KINDS = ("fork", "warm", "cold")
LAUNCH_KINDS = ("fork", "cold")
CLAIM_RESULTS = ("hit", "miss")
# Session starts range from a few ms (fork, warm) to seconds (a cold start importing a large agent).
START_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
MAX_REASONS = 20
OTHER_REASON = "other"
SESSION_STATES = ("active", "idle")
SPARE_STATES = ("ready", "starting")
TEMPLATE_STATES = ("alive", "starting", "unsafe", "down")


class Metrics:
    """The server's registry and the instruments its components report to."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.sessions_started = Counter(
            "hangar_sessions_started",
            "Sessions started, by how their sandbox was obtained (warm | fork | cold).",
            ["start_kind"],
            registry=self.registry,
        )
        self.cold_fallbacks = Counter(
            "hangar_session_cold_fallbacks",
            "Sandboxes started cold although their version could have been forked, by reason class.",
            ["reason"],
            registry=self.registry,
        )
        self.start_seconds = Histogram(
            "hangar_session_start_seconds",
            "Seconds from the start of a sandbox launch until its agent answered /ping (fork | cold).",
            ["start_kind"],
            buckets=START_BUCKETS,
            registry=self.registry,
        )
        self.spare_claims = Counter(
            "hangar_warm_pool_claims",
            "New sessions of a version that keeps spares, by whether a ready spare was there (hit | miss).",
            ["result"],
            registry=self.registry,
        )
        for result in CLAIM_RESULTS:
            self.spare_claims.labels(result)
        for kind in START_KINDS:  # every series exists from the first scrape, at 0
            self.sessions_started.labels(kind)
        for kind in LAUNCH_KINDS:
            self.start_seconds.labels(kind)
        self._reasons: set[str] = set()
        self.registry.register(TaskCollector())

    # --- reported by the session manager

    def session_started(self, start_kind: str) -> None:
        self.sessions_started.labels(start_kind).inc()

    def spare_claim(self, result: str) -> None:
        self.spare_claims.labels(result).inc()

    def cold_fallback(self, reason: str) -> None:
        label = reason_class(reason)
        if label not in self._reasons:
            if len(self._reasons) >= MAX_REASONS:
                label = OTHER_REASON
            self._reasons.add(label)
        self.cold_fallbacks.labels(label).inc()

    def sandbox_ready(self, start_kind: str, seconds: float) -> None:
        self.start_seconds.labels(start_kind).observe(seconds)

    def watch_sessions(self, manager: SessionManager) -> None:
        """Report ``manager``'s live sessions, warm pool and templates as gauges, read at each scrape."""
        self.registry.register(SessionCollector(manager))

    # --- read by the gateway

    def render(self, accept: str = "") -> tuple[bytes, str]:
        """The exposition (text format, or OpenMetrics when ``accept`` asks for it) and its content type."""
        encode, content_type = choose_encoder(accept)
        return encode(self.registry), content_type


class SessionCollector:
    """Gauges computed from the session manager when scraped (the scrape runs on the event loop that owns it)."""

    def __init__(self, manager: SessionManager) -> None:
        self.manager = manager

    def describe(self) -> list[Metric]:
        return []  # nothing to check at registration; the names are fixed above

    def collect(self) -> Iterator[Metric]:
        sessions = dict.fromkeys(SESSION_STATES, 0)
        for session in self.manager.live_sessions():
            state = session.state.value.lower()
            if state in sessions:
                sessions[state] += 1
        yield _gauge("hangar_sessions_live", "Live sessions by state (active | idle).", sessions)

        pool = self.manager.pool.describe()
        spares = {"ready": self.manager.pool.count(), "starting": _int(pool.get("starting"))}
        yield _gauge("hangar_warm_pool_spares", "Warm-pool sandboxes by state (ready | starting).", spares)

        templates = dict.fromkeys(TEMPLATE_STATES, 0)
        versions = self.manager.templates.describe().get("versions")
        for version in versions.values() if isinstance(versions, dict) else ():
            templates[template_state(version)] += 1
        help_text = "Warm templates of served versions by state (alive | starting | unsafe | down)."
        yield _gauge("hangar_templates", help_text, templates)


class TaskCollector:
    """``hangar_asyncio_tasks``: the live tasks of the event loop that runs the scrape (the server's only loop)."""

    def describe(self) -> list[Metric]:
        return []

    def collect(self) -> Iterator[Metric]:
        try:
            tasks = len(asyncio.all_tasks())
        except RuntimeError:  # rendered outside a running loop (a unit test): there is nothing to count
            return
        yield GaugeMetricFamily("hangar_asyncio_tasks", "asyncio tasks not yet done on the server's event loop.", tasks)


def template_state(version: dict[str, object]) -> str:
    """One of ``TEMPLATE_STATES`` for an entry of ``TemplateSet.describe()["versions"]``."""
    template = version.get("template")
    template = template if isinstance(template, dict) else {}
    if template.get("alive"):
        return "alive"
    if version.get("unsafeReason") or template.get("unsafeReason"):
        return "unsafe"
    if version.get("starting"):
        return "starting"
    return "down"


def reason_class(reason: str) -> str:
    """A cold reason without its details: the text before the first ``:`` or ``(``, numbers as ``N``."""
    head = re.split(r"[:(]", reason, maxsplit=1)[0]
    head = " ".join(re.sub(r"\d+", "N", head).split())
    return head[:80] or "unknown"


def _gauge(name: str, documentation: str, values: dict[str, int]) -> GaugeMetricFamily:
    family = GaugeMetricFamily(name, documentation, labels=["state"])
    for state, value in values.items():
        family.add_metric([state], value)
    return family


def _int(value: object) -> int:
    return value if isinstance(value, int) else 0
