"""1. New-session latency: first byte of the first invoke with a new session id.

Side by side, for a trivial agent (on ``hangar.sdk`` and on the unmodified ``bedrock-agentcore`` SDK) and one that
imports LangGraph, each deployed as three runtimes of the same code on one server (``BenchContext.arn``):

- **template** (the default settings): the version keeps forked spares sized from its arrival rate
  (``spares=auto``), so a session claims one (``startKind: warm``, ``spareKind: fork``) when one is ready and is
  forked from the version's warm template otherwise (``fork``). Sampling waits until the template is alive, never
  for a spare: the samples arrive as the bench's sequence makes them, and the mix of the two is reported;
- **fork only**: the same code with ``HANGAR_SPARES=off`` in its environment (the default before forked spares):
  every session is forked from the template when it arrives;
- **cold**: the runtime opts out (``HANGAR_TEMPLATE=off``), its sandbox starts from nothing;
- **warm pool**: the runtime keeps spares (forked from its template); each sample waits until the pool is full
  again, so it measures a claim, not a refill;

and the same agent started as a plain process (``python main.py`` until its first answer). Every sample is a new
session id, stopped (StopRuntimeSession) before the next one, so idle sessions do not pile up. Rounds are
interleaved so a noisy moment hits every contestant; templates are cheap, so each round takes several of them.
"""

from __future__ import annotations

import time
from collections import Counter
from pathlib import Path

import httpx

from bench.context import AGENTS, WARM_POOL, BenchContext, Kind, runtime_name
from bench.direct import DirectAgent, agent_env
from bench.hangar_instance import new_session_id
from bench.stats import ratio, summarize_ms

PAYLOAD = b'{"prompt": "hello"}'
# The trivial agent twice: on hangar.sdk and on the unmodified bedrock-agentcore SDK (what most users deploy).
REQUIREMENTS = {"echo_sdk": [], "echo_agentcore": ["bedrock-agentcore>=1,<2"], "heavy": ["langgraph>=1,<2"]}
# the startKinds the server may report for each contestant
REPORTED = {"template": ("fork", "warm"), "fork": ("fork",), "cold": ("cold",), "warm": ("warm",)}
TEMPLATES_PER_ROUND = 2
KINDS: tuple[Kind, ...] = ("template", "cold", "warm")


def hangar_first_bytes(
    ctx: BenchContext, arn: str, count: int, kind: str, kinds: Counter[str] | None = None
) -> list[float]:
    url = ctx.hangar.invoke_url(arn)
    samples = []
    with httpx.Client(timeout=120) as client:
        for _ in range(count):
            if kind == "warm":
                ctx.hangar.wait_spares(arn, WARM_POOL)
            elif kind in ("template", "fork"):
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
            if reported not in REPORTED[kind]:
                raise RuntimeError(f"expected a {' or '.join(REPORTED[kind])} start, the server reports {reported}")
            if kinds is not None:
                kinds[str(reported)] += 1
            samples.append(elapsed)
    return samples


def fork_only_arn(ctx: BenchContext, agent: str) -> str:
    """The agent once more, opted out of forked spares: new sessions fork from its template as they arrive."""
    name = f"{runtime_name(agent)}_nospares"
    if name not in ctx.deployed:
        env = {"HANGAR_SPARES": "off"}
        ctx.deployed[name] = ctx.hangar.deploy(AGENTS / agent, name=name, environmentVariables=env)
    return ctx.deployed[name]


def spare_memory(ctx: BenchContext, arn: str) -> dict[str, object]:
    """USS of the ready forked spares of ``arn`` (private pages of their processes, summed per spare), in MiB."""
    runtime_id = arn.rsplit("/", 1)[1]
    ready = ctx.hangar.operator()["warmPool"]["ready"]
    ids = [sid for key, group in ready.items() if key.startswith(f"{runtime_id}/") for sid in group]
    sizes = [uss_kib(sid) / 1024 for sid in ids]
    return {"spares": len(sizes), "uss_mib": [round(size, 1) for size in sizes]}


def uss_kib(sandbox_id: str) -> int:
    """Private_Clean + Private_Dirty of every process whose cgroup names the sandbox."""
    total = 0
    for proc in Path("/proc").iterdir():
        try:
            if not proc.name.isdigit() or sandbox_id not in (proc / "cgroup").read_text():
                continue
            for line in (proc / "smaps_rollup").read_text().splitlines():
                if line.startswith(("Private_Clean:", "Private_Dirty:")):
                    total += int(line.split()[1])
        except OSError:
            continue
    return total


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
        arns: dict[str, str] = {kind: ctx.arn(agent, kind) for kind in KINDS}
        arns["fork"] = fork_only_arn(ctx, agent)
        template_at_start = ctx.hangar.wait_template(arns["template"])
        _plain(agent, python, 1)  # warm the page cache for every contestant alike
        for kind, arn in arns.items():
            hangar_first_bytes(ctx, arn, 1, kind)
        samples: dict[str, list[float]] = {"template": [], "fork": [], "cold": [], "warm": [], "plain": []}
        kinds: Counter[str] = Counter()
        for _ in range(rounds):  # interleaved, so a noisy moment hits all five
            samples["template"] += hangar_first_bytes(ctx, arns["template"], TEMPLATES_PER_ROUND, "template", kinds)
            samples["fork"] += hangar_first_bytes(ctx, arns["fork"], TEMPLATES_PER_ROUND, "fork")
            samples["cold"] += hangar_first_bytes(ctx, arns["cold"], 1, "cold")
            samples["warm"] += hangar_first_bytes(ctx, arns["warm"], 1, "warm")
            samples["plain"] += _plain(agent, python, 1)
        template_at_end = ctx.hangar.template_state(arns["template"]) or {}
        summary: dict[str, object] = {
            "hangar_template": summarize_ms(samples["template"]),
            "hangar_fork_only": summarize_ms(samples["fork"]),
            "hangar_cold": summarize_ms(samples["cold"]),
            "hangar_warm_pool": summarize_ms(samples["warm"]),
            "plain_process": summarize_ms(samples["plain"]),
        }
        p50 = {name: value.get("p50_ms") for name, value in summary.items() if isinstance(value, dict)}
        summary["plain_over_template_p50"] = ratio(p50["plain_process"], p50["hangar_template"])
        summary["cold_over_template_p50"] = ratio(p50["hangar_cold"], p50["hangar_template"])
        summary["fork_only_over_template_p50"] = ratio(p50["hangar_fork_only"], p50["hangar_template"])
        summary["template_start_kinds"] = dict(kinds)  # warm: claimed a forked spare; fork: none was ready
        summary["forked_spares"] = spare_memory(ctx, arns["template"])
        summary["plain_over_warm_p50"] = ratio(p50["plain_process"], p50["hangar_warm_pool"])
        summary["plain_over_cold_p50"] = ratio(p50["plain_process"], p50["hangar_cold"])
        # one template served every sample (a restart in between would show as a different id)
        summary["template"] = {
            "same_template_throughout": template_at_end.get("id") == template_at_start["id"],
            "forks_during_suite": template_at_end.get("forks", 0) - template_at_start["forks"],
        }
        results[agent] = summary
    return results
