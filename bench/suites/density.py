"""6. Density and churn: memory per idle session and sustained new sessions per second, forked vs cold.

Memory, for N idle sessions of the trivial agent (each opened by one invoke, then left alone):

- **per session** (``uss``/``pss``): the processes of each session's own cgroup (``hangar-<tag>-<sandbox id>``,
  which a forked session's pid 1 is moved into), summed from ``smaps_rollup``, averaged over the sessions. USS
  (private pages) is what a session adds; PSS also charges it its share of pages it shares (with the template and
  the other sessions: 1/(N+1) of the template's pages each).
- **the template, once**: the same over the template's cgroup (its pid 1 and the zygote), at rest and with the N
  sessions alive (its USS shrinks as forks share its pages).
- **whole tree** (``tree_pss_delta``): the PSS of ``hangar serve`` and all its descendants after minus before,
  per session: the template's shared pages, the server's bookkeeping and the sessions together.
- ``cgroup``: the sessions' cgroup memory as the operator API reports it (``memoryBytes``: pages charged to the
  session, including its tmpfs and kernel memory).

Forked sessions (the default) at 100 and 1,000; cold sessions (``HANGAR_TEMPLATE=off``) at 100 for comparison.

Flat as load grows: for forked sessions, ``LOADED_SAMPLES`` new sessions (first byte, each stopped) are timed before
the N idle sessions open and again while they are all alive (``new_session_alone`` / ``new_session_with_idle``, and
their p50 ratio, with the start kinds of each group: under spares=auto a sample may take a forked spare, so the
ratio compares like with like only where the kinds match). And what idle sessions cost the CPU: the sessions'
cgroups' CPU time over ``CPU_WINDOW_S`` while nothing calls them (``idle_cpu_core_percent``: percent of one core for
all N together; the window starts ``SETTLE_S`` after the last open, while the last-opened agents still hold the
gateway's keep-alive connection and tick once a second), then again once every agent's keep-alive has ended
(``idle_cpu_core_percent_no_connection``), and the server's own CPU time in the first window
(``server_cpu_core_percent_while_idle``: its per-session bookkeeping).

Churn: ``CHURN_CLIENTS`` clients, each in a loop for a fixed time: invoke a new session id, StopRuntimeSession.
Sessions per second completed, for the forked and the cold runtime, with the first-byte latency under that load and
what the server reports it did (forks counted by the template, cold fallbacks).

Wall-clock numbers depend on what else the machine runs; the server's own CPU time per new session (alone, with the
N idle sessions, in churn: ``server_cpu_ms_per_*``) does much less, and says whether a cost grows with N.
"""

from __future__ import annotations

import contextlib
import glob
import os
import time
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

import httpx

from bench.context import BenchContext, Kind
from bench.hangar_instance import new_session_id
from bench.stats import ratio, summarize_ms
from bench.suites.new_session import hangar_first_bytes

PAYLOAD = b'{"prompt": "hello"}'
OPEN_WORKERS = 4
MAX_OPEN_ERRORS = 5
CHURN_CLIENTS = 8
SETTLE_S = 2.0
LOADED_SAMPLES = 10
CPU_WINDOW_S = 10.0  # 1 s in a smoke run
KEEP_ALIVE_S = 5.0  # uvicorn's keep-alive: an agent whose invoke was this long ago has closed its connection


def _descendants(root: int) -> list[int]:
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as stat:
                parent = int(stat.read().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue
        children.setdefault(parent, []).append(int(entry))
    found, stack = [], [root]
    while stack:
        for child in children.get(stack.pop(), []):
            found.append(child)
            stack.append(child)
    return found


def _memory_kib(pids: list[int]) -> tuple[int, int]:
    """Summed (PSS, USS) in KiB over ``pids`` from smaps_rollup."""
    pss = uss = 0
    for pid in pids:
        try:
            with open(f"/proc/{pid}/smaps_rollup") as rollup:
                for line in rollup:
                    key, _, rest = line.partition(":")
                    if key == "Pss":
                        pss += int(rest.split()[0])
                    elif key in ("Private_Clean", "Private_Dirty"):
                        uss += int(rest.split()[0])
        except OSError:
            continue
    return pss, uss


def _cgroup_pids(sandbox_id: str) -> list[int]:
    """The processes of a sandbox's cgroup (v1: any one controller's copy; v2: the unified tree)."""
    for pattern in (f"/sys/fs/cgroup/memory/hangar-*-{sandbox_id}", f"/sys/fs/cgroup/hangar-*-{sandbox_id}"):
        for path in glob.glob(pattern):
            try:
                with open(f"{path}/cgroup.procs") as procs:
                    return [int(line) for line in procs if line.strip()]
            except OSError:
                continue
    return []


def _mib(kib: float) -> float:
    return round(kib / 1024, 2)


def _in_workers(items: list[str], work: Callable[[httpx.Client, str], None]) -> None:
    """``work(client, item)`` for every item, spread over ``OPEN_WORKERS`` threads with one client each."""

    def worker(part: list[str]) -> None:
        with httpx.Client(timeout=300) as client:
            for item in part:
                work(client, item)

    with ThreadPoolExecutor(max_workers=OPEN_WORKERS) as pool:
        list(pool.map(worker, [items[i::OPEN_WORKERS] for i in range(OPEN_WORKERS)]))


def _open_sessions(ctx: BenchContext, arn: str, count: int) -> tuple[list[str], list[str]]:
    """Open ``count`` sessions (one invoke each); (the ids that opened, the errors). Gives up after
    ``MAX_OPEN_ERRORS`` failures, so a server that has stopped starting sessions is reported, not hammered."""
    url = ctx.hangar.invoke_url(arn)
    opened: list[str] = []
    errors: list[str] = []

    def one(client: httpx.Client, session: str) -> None:
        if len(errors) >= MAX_OPEN_ERRORS:
            return
        response = client.post(url, content=PAYLOAD, headers=ctx.hangar.signed_headers(url, PAYLOAD, session))
        if response.status_code == 200:
            opened.append(session)
        else:
            errors.append(f"after {len(opened)} sessions: {response.status_code} {response.text[:200]}")

    _in_workers([new_session_id() for _ in range(count)], one)
    return opened, errors


def _stop_all(ctx: BenchContext, arn: str, sessions: list[str]) -> None:
    _in_workers(sessions, lambda client, session: ctx.hangar.stop_session(client, arn, session))


def _idle(ctx: BenchContext, arn: str, count: int, kind: Kind) -> dict[str, object]:
    server_pid = ctx.hangar.process.pid  # type: ignore[union-attr]
    template = ctx.hangar.wait_template(arn) if kind == "template" else None
    tree_before, _ = _memory_kib([server_pid, *_descendants(server_pid)])
    template_before = _memory_kib(_cgroup_pids(template["id"])) if template else None
    available_before = _mem_available_kib()
    cpu_mark = _process_cpu_seconds(server_pid)
    alone_kinds: Counter[str] = Counter()  # forks or spares (spares=auto): the ratio compares like with like only
    alone = hangar_first_bytes(ctx, arn, LOADED_SAMPLES, kind, alone_kinds) if template else []
    alone_cpu = _process_cpu_seconds(server_pid) - cpu_mark
    started = time.perf_counter()
    sessions, errors = _open_sessions(ctx, arn, count)
    open_s = time.perf_counter() - started
    try:
        time.sleep(SETTLE_S)
        listing = ctx.hangar.operator()
        mine = set(sessions)
        live = [s for s in listing["sessions"] if s["runtimeSessionId"] in mine and s["state"] != "Terminated"]
        kinds: dict[str, int] = {}
        for entry in live:
            kinds[entry["startKind"]] = kinds.get(entry["startKind"], 0) + 1
        per_session = [_memory_kib(_cgroup_pids(entry["sandboxId"])) for entry in live]
        tree_after, _ = _memory_kib([server_pid, *_descendants(server_pid)])
        available_after = _mem_available_kib()
        template_after = _memory_kib(_cgroup_pids(template["id"])) if template else None
        cgroup_bytes = [entry.get("memoryBytes") or 0 for entry in live]
        alive = sum(1 for s in listing["sessions"] if s["state"] != "Terminated")
        window = 1.0 if ctx.smoke else CPU_WINDOW_S
        server_cpu_before = _process_cpu_seconds(server_pid)
        idle_cpu = _cpu_seconds([entry["sandboxId"] for entry in live], window)
        server_cpu = _process_cpu_seconds(server_pid) - server_cpu_before
        time.sleep(max(0.0, KEEP_ALIVE_S + SETTLE_S - window))  # past every agent's keep-alive (uvicorn: 5 s)
        quiet_cpu = _cpu_seconds([entry["sandboxId"] for entry in live], window)
        cpu_mark = _process_cpu_seconds(server_pid)
        ctx.hangar.operator()
        listing_cpu = _process_cpu_seconds(server_pid) - cpu_mark
        cpu_mark = _process_cpu_seconds(server_pid)
        loaded_kinds: Counter[str] = Counter()
        loaded = hangar_first_bytes(ctx, arn, LOADED_SAMPLES, kind, loaded_kinds) if template else []
        loaded_cpu = _process_cpu_seconds(server_pid) - cpu_mark
    finally:
        _stop_all(ctx, arn, sessions)
    measured = max(1, len(per_session))
    result: dict[str, object] = {
        "sessions": count,
        "opened": len(sessions),
        "failed_to_open": len(errors),
        "first_errors": errors[:3],
        "start_kinds": kinds,
        "alive_at_once": alive,
        "open_seconds": round(open_s, 2),
        "pss_mib_per_session": _mib(sum(p for p, _ in per_session) / measured),
        "uss_mib_per_session": _mib(sum(u for _, u in per_session) / measured),
        "uss_mib_max_session": _mib(max((u for _, u in per_session), default=0)),
        "cgroup_mib_per_session": round(sum(cgroup_bytes) / measured / 2**20, 2),
        "tree_pss_delta_mib_per_session": _mib((tree_after - tree_before) / measured),
        "mem_available_drop_mib_per_session": _mib((available_before - available_after) / measured),
        "idle_cpu_core_percent": round(idle_cpu / window * 100, 2),
        "idle_cpu_core_percent_no_connection": round(quiet_cpu / window * 100, 2),
        "server_cpu_core_percent_while_idle": round(server_cpu / window * 100, 2),
    }
    if alone and loaded:
        before, during = summarize_ms(alone), summarize_ms(loaded)
        result["new_session_alone"], result["new_session_with_idle"] = before, during
        result["with_idle_over_alone_p50"] = ratio(during["p50_ms"], before["p50_ms"])
        result["start_kinds_alone"], result["start_kinds_with_idle"] = dict(alone_kinds), dict(loaded_kinds)
        # The server's CPU per sample (start, first byte, stop, and the bench's two operator listings per sample,
        # which grow with the sessions alive: one listing's CPU is given to subtract), load-independent.
        result["server_cpu_ms_per_new_session_alone"] = round(alone_cpu / len(alone) * 1000, 1)
        result["server_cpu_ms_per_new_session_with_idle"] = round(loaded_cpu / len(loaded) * 1000, 1)
        result["server_cpu_ms_per_operator_listing_with_idle"] = round(listing_cpu * 1000, 1)
    if template_before and template_after:
        result["template"] = {
            "pss_mib_at_rest": _mib(template_before[0]),
            "uss_mib_at_rest": _mib(template_before[1]),
            "pss_mib_with_sessions": _mib(template_after[0]),
            "uss_mib_with_sessions": _mib(template_after[1]),
        }
    return result


def _cpu_seconds(sandbox_ids: list[str], window_s: float) -> float:
    """CPU seconds the sandboxes' cgroups used during ``window_s`` of this process sleeping (v1 or v2)."""

    def total() -> float:
        used = 0.0
        for sandbox_id in sandbox_ids:
            for path in glob.glob(f"/sys/fs/cgroup/cpuacct/hangar-*-{sandbox_id}/cpuacct.usage"):
                with contextlib.suppress(OSError, ValueError), open(path) as usage:
                    used += int(usage.read()) / 1e9
            for path in glob.glob(f"/sys/fs/cgroup/hangar-*-{sandbox_id}/cpu.stat"):
                with contextlib.suppress(OSError, ValueError), open(path) as stat:
                    fields = dict(line.split() for line in stat if line.strip())
                    used += int(fields.get("usage_usec", 0)) / 1e6
        return used

    before = total()
    time.sleep(window_s)
    return total() - before


def _process_cpu_seconds(pid: int) -> float:
    """User and system CPU seconds of one process (all its threads), from /proc/PID/stat."""
    with open(f"/proc/{pid}/stat") as stat:
        fields = stat.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _mem_available_kib() -> int:
    with open("/proc/meminfo") as meminfo:
        for line in meminfo:
            if line.startswith("MemAvailable:"):
                return int(line.split()[1])
    return 0


def _churn(ctx: BenchContext, arn: str, kind: Kind, seconds: float) -> dict[str, object]:
    """New sessions per second, sustained: ``CHURN_CLIENTS`` clients each open a session (first invoke), stop it,
    and go again until the time is up."""
    url = ctx.hangar.invoke_url(arn)
    before = ctx.hangar.operator()["templates"]
    template_before = ctx.hangar.wait_template(arn) if kind == "template" else None
    latencies: list[float] = []
    errors: list[str] = []
    deadline = time.perf_counter() + seconds

    def client(_: int) -> int:
        opened = 0
        with httpx.Client(timeout=120) as http:
            while time.perf_counter() < deadline:
                session = new_session_id()
                began = time.perf_counter()
                response = http.post(url, content=PAYLOAD, headers=ctx.hangar.signed_headers(url, PAYLOAD, session))
                if response.status_code != 200:
                    errors.append(f"{response.status_code} {response.text[:200]}")
                    continue
                latencies.append(time.perf_counter() - began)
                ctx.hangar.stop_session(http, arn, session)
                opened += 1
        return opened

    server_pid = ctx.hangar.process.pid  # type: ignore[union-attr]
    cpu_mark = _process_cpu_seconds(server_pid)
    started = time.perf_counter()
    with ThreadPoolExecutor(max_workers=CHURN_CLIENTS) as pool:
        total = sum(pool.map(client, range(CHURN_CLIENTS)))
    elapsed = time.perf_counter() - started
    server_cpu = _process_cpu_seconds(server_pid) - cpu_mark
    after = ctx.hangar.operator()["templates"]
    result: dict[str, object] = {
        "clients": CHURN_CLIENTS,
        "seconds": round(elapsed, 2),
        "sessions": total,
        "sessions_per_s": round(total / elapsed, 1),
        "server_cpu_ms_per_session": round(server_cpu / max(1, total) * 1000, 1),  # start and stop, load-independent
        "first_byte": summarize_ms(latencies),
        "errors": len(errors),
        "first_errors": errors[:3],
        "cold_fallbacks": {
            reason: count - before["coldFallbacks"].get(reason, 0)
            for reason, count in after["coldFallbacks"].items()
            if count != before["coldFallbacks"].get(reason, 0)
        },
    }
    if template_before is not None:
        template_after = ctx.hangar.template_state(arn) or {}
        result["forked"] = template_after.get("forks", 0) - template_before["forks"]
    return result


def run(ctx: BenchContext) -> dict[str, object]:
    forked, cold = ctx.arn("echo_sdk"), ctx.arn("echo_sdk", "cold")
    results: dict[str, object] = {}
    for count in (ctx.n(100, 3), ctx.n(1000, 6)):
        results[f"idle_{count}"] = _idle(ctx, forked, count, "template")
    count = ctx.n(100, 3)
    results[f"idle_{count}_cold"] = _idle(ctx, cold, count, "cold")
    seconds = 3 if ctx.smoke else 15
    results["churn_fork"] = _churn(ctx, forked, "template", seconds)
    results["churn_cold"] = _churn(ctx, cold, "cold", seconds)
    fork_rate, cold_rate = results["churn_fork"]["sessions_per_s"], results["churn_cold"]["sessions_per_s"]  # type: ignore[index]
    results["churn_new_sessions_per_s"] = fork_rate
    results["churn_fork_over_cold"] = round(fork_rate / cold_rate, 2) if cold_rate else None
    return results
