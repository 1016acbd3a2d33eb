"""8. Soak: mixed load with session churn for a long time; the server's memory, fds, threads and tasks must stay flat.

Its own ``hangar serve`` (a data dir of its own, so nothing another suite left counts), one runtime of
``bench/agents/soak``, and ``bench/soak_load.py``'s traffic for ``--soak-seconds`` (30 minutes in a full run,
60 s with ``--smoke``). Every ``interval`` seconds it samples the server process: RSS, open fds
(``/proc/<pid>/fd``), threads (``/proc/<pid>/task``), asyncio tasks (``hangar_asyncio_tasks`` on ``/metrics``),
live sessions (``hangar_sessions_live``) and live sandboxes (this installation's cgroups). After a warm-up
(10 % of the run, at most 60 s) it compares the median of the first window (5 minutes, or a quarter of what is
measured when shorter) with the median of the last, fits a slope per hour, and calls each series flat by
``RULE``. After the server stopped it counts what it left: uid leases, cgroups, network namespaces, host veths
(of the sandboxes seen: a watcher lists the installation's sandbox state dirs every ``WATCH_S``) and state dirs.
"""

from __future__ import annotations

import itertools
import statistics
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING

import httpx
from prometheus_client.parser import text_string_to_metric_families

from bench.context import AGENTS, BenchContext, server_env
from bench.hangar_instance import HangarInstance
from bench.soak_load import Load

if TYPE_CHECKING:
    from hangar.sandbox.namespace.cgroups import CgroupLayout

FULL_SECONDS = 30 * 60
SMOKE_SECONDS = 60
WINDOW_S = 300
SEGMENTS = 6
RATIO = 1.10
WATCH_S = 0.05
# growth below these (per series, in its unit) is noise at any size: a few fds of an in-flight request, one task
SLACK = {"rss_mib": 8.0, "fds": 8, "threads": 2, "asyncio_tasks": 16, "sessions": 2, "sandboxes": 2}
RULE = (
    f"flat: last-window median <= {RATIO:.2f} x first-window median (or grows by at most the slack {SLACK}), "
    f"and not monotonic growth (the medians of {SEGMENTS} equal segments after warm-up rising at every step "
    "by more than the slack in all)"
)


def run(ctx: BenchContext) -> dict[str, object]:
    seconds = ctx.soak_seconds or (SMOKE_SECONDS if ctx.smoke else FULL_SECONDS)
    interval = 2.0 if seconds <= 120 else 5.0 if seconds <= 900 else 10.0
    warmup = min(60.0, seconds * 0.1)
    data_dir = ctx.hangar.data_dir.parent / "soak"
    hangar = HangarInstance(data_dir, extra_args=ctx.hangar.extra_args, env=server_env()).start()
    probe = Probe(hangar)
    try:
        arn = hangar.deploy(AGENTS / "soak", name="bench_soak")
        load = Load(hangar, arn, seconds)
        load.start()
        watcher = threading.Thread(target=probe.watch, name="soak-watch", daemon=True)
        watcher.start()
        samples = probe.sample_until(time.monotonic() + seconds, interval)
        load.stop()
        probe.done.set()
        watcher.join(10)
        time.sleep(interval)  # what the stopped load's sessions leave behind, once their stops are through
        after_load = probe.sample(time.monotonic() - probe.started)
    finally:
        hangar.stop()
    result: dict[str, object] = {
        "seconds": seconds,
        "interval_s": interval,
        "warmup_s": warmup,
        "rule": RULE,
        **load.tally.summary(),
    }
    measured = [s for s in samples if warmup <= s["t"] <= seconds]
    window = min(WINDOW_S, (seconds - warmup) / 4)
    result["window_s"] = window
    result["series"] = {name: trend(measured, name, window) for name in SLACK}
    result["flat"] = all(v.get("flat") for v in result["series"].values() if v.get("n"))  # type: ignore[union-attr]
    result["leftovers"] = {**leftovers(data_dir, probe.seen), "sessions_started": after_load.get("started")}
    result["after_load"] = after_load
    result["samples"] = samples
    return result


class Probe:
    """Reads the server process's numbers from ``/proc`` and ``/metrics``; remembers every sandbox id it saw."""

    def __init__(self, hangar: HangarInstance) -> None:
        self.hangar = hangar
        self.pid = hangar.process.pid  # type: ignore[union-attr]
        self.started = time.monotonic()
        self.seen: set[str] = set()
        self.done = threading.Event()
        self.layout, self.prefix = _cgroups(hangar.data_dir)

    def watch(self) -> None:
        """Collect the id of every sandbox that lives longer than ``WATCH_S`` (for the leftover veth check)."""
        from hangar.sandbox.state import instance_tag, list_states

        root = Path("/run/hangar") / instance_tag(self.hangar.data_dir)
        while not self.done.wait(WATCH_S):
            self.seen.update(state.sandbox_id for state in list_states(root))

    def sample_until(self, deadline: float, interval: float) -> list[dict[str, float]]:
        self.started = time.monotonic()
        samples = []
        stop = threading.Event()
        while time.monotonic() < deadline:
            samples.append(self.sample(time.monotonic() - self.started))
            stop.wait(min(interval, max(0.0, deadline - time.monotonic())))
        return samples

    def sample(self, t: float) -> dict[str, float]:
        rss_kib, _ = self.hangar.server_rss_kib()
        proc = Path(f"/proc/{self.pid}")
        sample: dict[str, float] = {
            "t": round(t, 1),
            "rss_mib": round(rss_kib / 1024, 2),
            "fds": len(list((proc / "fd").iterdir())),
            "threads": len(list((proc / "task").iterdir())),
        }
        metrics = httpx.get(f"{self.hangar.url}/metrics", timeout=30).text
        for family in text_string_to_metric_families(metrics):
            if family.name == "hangar_asyncio_tasks":
                sample["asyncio_tasks"] = family.samples[0].value
            elif family.name == "hangar_sessions_live":
                sample["sessions"] = sum(s.value for s in family.samples)
            elif family.name == "hangar_sessions_started":
                sample["started"] = int(sum(s.value for s in family.samples if s.name.endswith("_total")))
        if self.layout is not None:
            from hangar.sandbox.namespace.cgroups import list_names

            names = list_names(self.layout, self.prefix)
            self.seen.update(name[len(self.prefix) :] for name in names)
            sample["sandboxes"] = len(names)
        return sample


def trend(samples: list[dict[str, float]], name: str, window: float) -> dict[str, object]:
    """First- and last-window medians, slope per hour (least squares) and the verdict of ``RULE`` for one series."""
    points = [(s["t"], s[name]) for s in samples if name in s]
    if len(points) < 2:
        return {"n": len(points)}
    start, end = points[0][0], points[-1][0]
    first = statistics.median(v for t, v in points if t <= start + window)
    last = statistics.median(v for t, v in points if t >= end - window)
    times, values = zip(*points, strict=True)
    slope = statistics.linear_regression(times, values).slope if len(set(times)) > 1 else 0.0
    segments = [statistics.median(chunk) for chunk in _split([v for _, v in points], SEGMENTS)]
    rising = all(b > a for a, b in itertools.pairwise(segments))
    monotonic = len(segments) == SEGMENTS and rising and segments[-1] - segments[0] > SLACK[name]
    grew = last - first
    return {
        "n": len(points),
        "first": round(first, 2),
        "last": round(last, 2),
        "ratio": round(last / first, 3) if first else None,
        "slope_per_hour": round(slope * 3600, 2),
        "monotonic_growth": monotonic,
        "flat": (last <= first * RATIO or grew <= SLACK[name]) and not monotonic,
    }


def leftovers(data_dir: Path, seen: set[str]) -> dict[str, object]:
    """What the stopped server left on the host: every count must be 0 (None: not a namespace-backend host)."""
    from hangar.sandbox.state import instance_tag, list_states

    tag = instance_tag(data_dir)
    layout, prefix = _cgroups(data_dir)
    if layout is None:
        return {"uid_leases": None, "cgroups": None, "netns": None, "veths": None, "state_dirs": None}
    from hangar.sandbox.namespace import network
    from hangar.sandbox.namespace.backend import DEFAULT_LEASE_DIR
    from hangar.sandbox.namespace.cgroups import list_names
    from hangar.sandbox.namespace.uids import UidLeases

    return {
        "uid_leases": len(UidLeases(DEFAULT_LEASE_DIR, tag).owned()),
        "cgroups": len(list_names(layout, prefix)),
        "netns": len(network.list_netns(prefix)),
        "veths": sum(Path("/sys/class/net", network.names(tag, i)[1]).exists() for i in seen),
        "sandboxes_seen": len(seen),
        "state_dirs": len(list_states(Path("/run/hangar") / tag)),  # sandbox state dirs (not the backend's own)
    }


def _cgroups(data_dir: Path) -> tuple[CgroupLayout | None, str]:
    """This installation's cgroup layout and name prefix, or (None, prefix) where sandboxes get no cgroups."""
    from hangar.sandbox.namespace.cgroups import detect
    from hangar.sandbox.state import instance_tag

    return detect(), f"hangar-{instance_tag(data_dir)}-"


def _split(values: list[float], parts: int) -> list[list[float]]:
    size = len(values) // parts
    if size == 0:
        return []
    return [values[i * size : (i + 1) * size] for i in range(parts)]
