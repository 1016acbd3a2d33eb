"""1. New-session latency: first byte of the first invoke with a new session id.

Side by side, for a trivial agent and one that imports LangGraph: Hangar cold (a runtime without a warm pool),
Hangar warm pool (the same code deployed as a second runtime that keeps spares; each sample waits until the pool
is full again, so it measures a claim, not a refill), and the same agent started as a plain process
(`python main.py` until its first answer). Every Hangar sample checks the ``startKind`` the server reports.
"""

from __future__ import annotations

import time

import httpx

from bench.context import AGENTS, WARM_POOL, BenchContext
from bench.direct import DirectAgent, agent_env
from bench.hangar_instance import new_session_id
from bench.stats import ratio, summarize_ms

PAYLOAD = b'{"prompt": "hello"}'
REQUIREMENTS = {"echo_sdk": [], "heavy": ["langgraph>=1,<2"]}


def _hangar_first_byte(ctx: BenchContext, arn: str, count: int, kind: str) -> list[float]:
    url = ctx.hangar.invoke_url(arn)
    samples = []
    with httpx.Client(timeout=120) as client:
        for _ in range(count):
            if kind == "warm":
                ctx.hangar.wait_spares(arn, WARM_POOL)
            session = new_session_id()
            headers = ctx.hangar.signed_headers(url, PAYLOAD, session)
            started = time.perf_counter()
            with client.stream("POST", url, content=PAYLOAD, headers=headers) as response:
                chunks = response.iter_raw()
                first = next(chunks, b"")
                elapsed = time.perf_counter() - started
                rest = b"".join(chunks)
            if response.status_code != 200:
                raise RuntimeError(f"invoke failed: {response.status_code} {(first + rest)[:300]!r}")
            reported = ctx.hangar.start_kind(session)
            if reported != kind:
                raise RuntimeError(f"expected a {kind} start, the server reports {reported}")
            samples.append(elapsed)
            _stop(ctx, arn, session)
    return samples


def _stop(ctx: BenchContext, arn: str, session: str) -> None:
    ctx.hangar.client("bedrock-agentcore").stop_runtime_session(agentRuntimeArn=arn, runtimeSessionId=session)


def _plain(folder_name: str, python, count: int) -> list[float]:  # type: ignore[no-untyped-def]
    samples = []
    for _ in range(count):
        agent = DirectAgent(AGENTS / folder_name, python)
        try:
            samples.append(agent.cold_first_answer(PAYLOAD))
        finally:
            agent.stop()
    return samples


def run(ctx: BenchContext) -> dict[str, object]:
    results: dict[str, object] = {}
    for agent, requirements in REQUIREMENTS.items():
        count = ctx.n(30 if agent == "echo_sdk" else 15, 2)
        python = agent_env(agent, requirements) / "bin" / "python"
        cold_arn, warm_arn = ctx.arn(agent), ctx.arn(agent, warm=True)
        _plain(agent, python, 1)  # warm the page cache for every contestant alike
        _hangar_first_byte(ctx, cold_arn, 1, "cold")
        cold, warm, plain = [], [], []
        for _ in range(count):  # interleaved, so a noisy moment hits all three
            cold += _hangar_first_byte(ctx, cold_arn, 1, "cold")
            warm += _hangar_first_byte(ctx, warm_arn, 1, "warm")
            plain += _plain(agent, python, 1)
        summary = {"hangar_cold": summarize_ms(cold), "hangar_warm_pool": summarize_ms(warm)}
        summary["plain_process"] = summarize_ms(plain)
        summary["plain_over_warm_p50"] = ratio(
            summary["plain_process"]["p50_ms"], summary["hangar_warm_pool"]["p50_ms"]
        )
        summary["plain_over_cold_p50"] = ratio(summary["plain_process"]["p50_ms"], summary["hangar_cold"]["p50_ms"])
        results[agent] = summary
    return results
