"""1. New-session latency: first byte of the first invoke with a new session id.

Side by side, for a trivial agent (on ``hangar.sdk`` and on the unmodified ``bedrock-agentcore`` SDK) and one that
imports LangGraph, each deployed as three runtimes of the same code on one server (``BenchContext.arn``):

- **template** (the default): the session is forked from the version's warm template. Sampling waits until the
  template is alive (operator API), and every sample checks that the server reports ``startKind: fork``;
- **cold**: the runtime opts out (``HANGAR_TEMPLATE=off``), its sandbox starts from nothing;
- **warm pool**: the runtime keeps spares (forked from its template); each sample waits until the pool is full
  again, so it measures a claim, not a refill;

and the same agent started as a plain process (``python main.py`` until its first answer). Every sample is a new
session id, stopped (StopRuntimeSession) before the next one, so idle sessions do not pile up. Rounds are
interleaved so a noisy moment hits every contestant; templates are cheap, so each round takes several of them.
"""

from __future__ import annotations

import time

import httpx

from bench.context import AGENTS, WARM_POOL, BenchContext, Kind
from bench.direct import DirectAgent, agent_env
from bench.hangar_instance import new_session_id
from bench.stats import ratio, summarize_ms

PAYLOAD = b'{"prompt": "hello"}'
# The trivial agent twice: on hangar.sdk and on the unmodified bedrock-agentcore SDK (what most users deploy).
REQUIREMENTS = {"echo_sdk": [], "echo_agentcore": ["bedrock-agentcore>=1,<2"], "heavy": ["langgraph>=1,<2"]}
REPORTED = {"template": "fork", "cold": "cold", "warm": "warm"}  # the startKind the server must report
TEMPLATES_PER_ROUND = 2


def hangar_first_bytes(ctx: BenchContext, arn: str, count: int, kind: Kind) -> list[float]:
    url = ctx.hangar.invoke_url(arn)
    samples = []
    with httpx.Client(timeout=120) as client:
        for _ in range(count):
            if kind == "warm":
                ctx.hangar.wait_spares(arn, WARM_POOL)
            elif kind == "template":
                ctx.hangar.wait_template(arn)  # a template that died is restarted: sample only a live one
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
            ctx.hangar.stop_session(client, arn, session)
            if reported != REPORTED[kind]:
                raise RuntimeError(f"expected a {REPORTED[kind]} start, the server reports {reported}")
            samples.append(elapsed)
    return samples


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
        rounds = ctx.n(15 if agent == "heavy" else 30, 2)
        python = agent_env(agent, requirements) / "bin" / "python"
        arns: dict[Kind, str] = {kind: ctx.arn(agent, kind) for kind in ("template", "cold", "warm")}
        template_at_start = ctx.hangar.wait_template(arns["template"])
        _plain(agent, python, 1)  # warm the page cache for every contestant alike
        for kind, arn in arns.items():
            hangar_first_bytes(ctx, arn, 1, kind)
        samples: dict[str, list[float]] = {"template": [], "cold": [], "warm": [], "plain": []}
        for _ in range(rounds):  # interleaved, so a noisy moment hits all four
            samples["template"] += hangar_first_bytes(ctx, arns["template"], TEMPLATES_PER_ROUND, "template")
            samples["cold"] += hangar_first_bytes(ctx, arns["cold"], 1, "cold")
            samples["warm"] += hangar_first_bytes(ctx, arns["warm"], 1, "warm")
            samples["plain"] += _plain(agent, python, 1)
        template_at_end = ctx.hangar.template_state(arns["template"]) or {}
        summary: dict[str, object] = {
            "hangar_template": summarize_ms(samples["template"]),
            "hangar_cold": summarize_ms(samples["cold"]),
            "hangar_warm_pool": summarize_ms(samples["warm"]),
            "plain_process": summarize_ms(samples["plain"]),
        }
        p50 = {name: value.get("p50_ms") for name, value in summary.items() if isinstance(value, dict)}
        summary["plain_over_template_p50"] = ratio(p50["plain_process"], p50["hangar_template"])
        summary["cold_over_template_p50"] = ratio(p50["hangar_cold"], p50["hangar_template"])
        summary["plain_over_warm_p50"] = ratio(p50["plain_process"], p50["hangar_warm_pool"])
        summary["plain_over_cold_p50"] = ratio(p50["plain_process"], p50["hangar_cold"])
        # one template served every sample (a restart in between would show as a different id)
        summary["template"] = {
            "same_template_throughout": template_at_end.get("id") == template_at_start["id"],
            "forks_during_suite": template_at_end.get("forks", 0) - template_at_start["forks"],
        }
        results[agent] = summary
    return results
