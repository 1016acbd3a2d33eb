"""6. Density and churn: memory per idle session (PSS and unique set) and sustained new sessions per second."""

from __future__ import annotations

import os
import time
from concurrent.futures import ThreadPoolExecutor

import httpx

from bench.context import BenchContext
from bench.hangar_instance import new_session_id

PAYLOAD = b'{"prompt": "hello"}'


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


def _open_sessions(ctx: BenchContext, arn: str, count: int, workers: int = 4) -> list[str]:
    url = ctx.hangar.invoke_url(arn)

    def one(_: int) -> str:
        session = new_session_id()
        with httpx.Client(timeout=300) as client:
            response = client.post(url, content=PAYLOAD, headers=ctx.hangar.signed_headers(url, PAYLOAD, session))
            if response.status_code != 200:
                raise RuntimeError(f"session start failed: {response.status_code} {response.text[:300]}")
        return session

    with ThreadPoolExecutor(max_workers=workers) as pool:
        return list(pool.map(one, range(count)))


def _stop_all(ctx: BenchContext, arn: str, sessions: list[str], workers: int = 4) -> None:
    data = ctx.hangar.client("bedrock-agentcore")
    with ThreadPoolExecutor(max_workers=workers) as pool:
        list(pool.map(lambda s: data.stop_runtime_session(agentRuntimeArn=arn, runtimeSessionId=s), sessions))


def run(ctx: BenchContext) -> dict[str, object]:
    arn = ctx.arn("echo_sdk")
    server_pid = ctx.hangar.process.pid  # type: ignore[union-attr]
    results: dict[str, object] = {}
    for count in (ctx.n(100, 3), ctx.n(500, 6)):
        baseline_pss, baseline_uss = _memory_kib(_descendants(server_pid))
        sessions = _open_sessions(ctx, arn, count)
        time.sleep(2)
        pss, uss = _memory_kib(_descendants(server_pid))
        alive = sum(1 for s in ctx.hangar.operator()["sessions"] if s["state"] != "Terminated")
        results[f"idle_{count}"] = {
            "sessions": count,
            "alive_at_once": alive,
            "pss_mib_per_session": round((pss - baseline_pss) / 1024 / count, 2),
            "uss_mib_per_session": round((uss - baseline_uss) / 1024 / count, 2),
        }
        _stop_all(ctx, arn, sessions)
    results["churn_new_sessions_per_s"] = _churn(ctx, arn, 3 if ctx.smoke else 15)
    return results


def _churn(ctx: BenchContext, arn: str, seconds: float, workers: int = 4) -> float:
    """New sessions per second, sustained: ``workers`` clients each open a session (first invoke) and stop it."""
    deadline = time.perf_counter() + seconds

    def client(_: int) -> int:
        opened = 0
        while time.perf_counter() < deadline:
            session = _open_sessions(ctx, arn, 1, workers=1)
            opened += 1
            _stop_all(ctx, arn, session, workers=1)
        return opened

    started = time.perf_counter()
    with ThreadPoolExecutor(max_workers=workers) as pool:
        total = sum(pool.map(client, range(workers)))
    return round(total / (time.perf_counter() - started), 1)
