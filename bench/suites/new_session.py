"""1. New-session latency: first byte of the first invoke with a new session id.

Hangar (whatever start path the server uses: template, pool or cold) vs the same agent started as a plain
process (`python main.py` until its first answer), for a trivial agent and one that imports LangGraph.
"""

from __future__ import annotations

import time

import httpx

from bench.context import AGENTS, BenchContext
from bench.direct import DirectAgent, agent_env
from bench.hangar_instance import new_session_id
from bench.stats import ratio, summarize_ms

PAYLOAD = b'{"prompt": "hello"}'


def _hangar_first_byte(ctx: BenchContext, arn: str, count: int) -> list[float]:
    url = ctx.hangar.invoke_url(arn)
    samples = []
    with httpx.Client(timeout=120) as client:
        for _ in range(count):
            session = new_session_id()
            headers = ctx.hangar.signed_headers(url, PAYLOAD, session)
            started = time.perf_counter()
            with client.stream("POST", url, content=PAYLOAD, headers=headers) as response:
                next(response.iter_raw(), None)
                elapsed = time.perf_counter() - started
                if response.status_code != 200:
                    raise RuntimeError(f"invoke failed: {response.status_code} {response.read()[:300]!r}")
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
    for agent, requirements in (("echo_sdk", []), ("heavy", ["langgraph>=1,<2"])):
        count = ctx.n(30 if agent == "echo_sdk" else 10, 2)
        env = agent_env(agent, requirements)
        arn = ctx.arn(agent)
        hangar = summarize_ms(_hangar_first_byte(ctx, arn, count))
        plain = summarize_ms(_plain(agent, env / "bin" / "python", count))
        results[agent] = {
            "hangar": hangar,
            "plain_process": plain,
            "plain_over_hangar_p50": ratio(plain.get("p50_ms"), hangar.get("p50_ms")),
        }
    return results
