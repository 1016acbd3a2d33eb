"""4. Streaming: time to first event and events/s of a 1,000-event SSE stream, Hangar vs the agent directly."""

from __future__ import annotations

import time

import httpx

from bench.context import AGENTS, BenchContext
from bench.direct import DirectAgent, agent_env
from bench.hangar_instance import new_session_id
from bench.stats import ratio, summarize_ms

EVENTS = 1000
PAYLOAD = b'{"stream": 1000}'


def _measure(client: httpx.Client, url: str, headers: dict[str, str]) -> tuple[float, float]:
    started = time.perf_counter()
    first = 0.0
    seen = 0
    with client.stream("POST", url, content=PAYLOAD, headers=headers) as response:
        for line in response.iter_lines():
            if line.startswith("data:"):
                seen += 1
                if seen == 1:
                    first = time.perf_counter() - started
    total = time.perf_counter() - started
    if seen != EVENTS:
        raise RuntimeError(f"expected {EVENTS} events, got {seen}")
    return first, EVENTS / total


def run(ctx: BenchContext) -> dict[str, object]:
    reps = ctx.n(30, 3)
    arn = ctx.arn("raw")
    url = ctx.hangar.invoke_url(arn)
    session = new_session_id()
    direct = DirectAgent(AGENTS / "raw", agent_env("raw", []) / "bin" / "python")
    direct.start()
    out: dict[str, dict[str, list[float]]] = {"hangar": {"first": [], "rate": []}, "direct": {"first": [], "rate": []}}
    try:
        with httpx.Client(timeout=60) as client:
            for _ in range(reps + 1):
                headers = ctx.hangar.signed_headers(url, PAYLOAD, session)
                first, rate = _measure(client, url, headers)
                out["hangar"]["first"].append(first)
                out["hangar"]["rate"].append(rate)
                first, rate = _measure(client, f"{direct.url}/invocations", {})
                out["direct"]["first"].append(first)
                out["direct"]["rate"].append(rate)
    finally:
        direct.stop()
    summary: dict[str, object] = {}
    for name, values in out.items():
        rates = sorted(values["rate"][1:])
        summary[name] = {
            "first_event": summarize_ms(values["first"][1:]),
            "events_per_s_p50": round(rates[len(rates) // 2]),
        }
    summary["first_event_overhead_ms"] = round(
        summary["hangar"]["first_event"]["p50_ms"] - summary["direct"]["first_event"]["p50_ms"],
        3,  # type: ignore[index]
    )
    summary["events_per_s_vs_direct"] = ratio(
        summary["hangar"]["events_per_s_p50"],
        summary["direct"]["events_per_s_p50"],  # type: ignore[index]
    )
    return summary
