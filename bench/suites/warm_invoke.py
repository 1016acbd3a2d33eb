"""2. Warm invoke: latency and throughput at 1/8/32/64 clients, Hangar vs the agent served directly.

Floors: the same hangar.sdk agent under uvicorn directly, and the real bedrock-agentcore app directly.
Load comes from wrk pinned to one core; Hangar requests carry a SigV4 signature computed once (valid ~5 min).
The session is forked from the version's warm template (how new sessions start by default): the suite waits for
the template first, since a session opened before it is ready starts cold; ``session_start_kind`` says which it was.
"""

from __future__ import annotations

from bench import wrk
from bench.context import AGENTS, BenchContext
from bench.direct import DirectAgent, agent_env
from bench.hangar_instance import new_session_id
from bench.stats import ratio

PAYLOAD = b'{"prompt": "hello"}'
LEVELS = (1, 8, 32, 64)


def run(ctx: BenchContext) -> dict[str, object]:
    if not wrk.available():
        return {"skipped": "wrk is not installed (apt-get install wrk)"}
    seconds = 2 if ctx.smoke else 8
    levels = (1, 8) if ctx.smoke else LEVELS
    arn = ctx.arn("echo_sdk")
    ctx.hangar.wait_template(arn)
    url = ctx.hangar.invoke_url(arn)
    session = new_session_id()
    headers = ctx.hangar.signed_headers(url, PAYLOAD, session)
    results: dict[str, object] = {}
    direct_sdk = DirectAgent(AGENTS / "echo_sdk", agent_env("echo_sdk", []) / "bin" / "python")
    direct_ref = DirectAgent(
        AGENTS / "echo_agentcore", agent_env("echo_agentcore", ["bedrock-agentcore>=1,<2"]) / "bin" / "python"
    )
    direct_sdk.start()
    direct_ref.start()
    try:
        wrk.run(url, PAYLOAD, headers, 1, 1)  # warms the session's sandbox
        results["session_start_kind"] = ctx.hangar.start_kind(session)
        for level in levels:
            headers = ctx.hangar.signed_headers(url, PAYLOAD, session)  # fresh: a signature is valid ~5 minutes
            hangar = wrk.run(url, PAYLOAD, headers, level, seconds)
            floor = wrk.run(
                f"{direct_sdk.url}/invocations", PAYLOAD, {"Content-Type": "application/json"}, level, seconds
            )
            reference = wrk.run(
                f"{direct_ref.url}/invocations", PAYLOAD, {"Content-Type": "application/json"}, level, seconds
            )
            results[f"c{level}"] = {
                "hangar": hangar,
                "direct_uvicorn": floor,
                "bedrock_agentcore_direct": reference,
                "p50_overhead_ms": round(hangar["p50_ms"] - floor["p50_ms"], 3),
                "throughput_vs_direct": ratio(hangar["rps"], floor["rps"]),
            }
    finally:
        direct_sdk.stop()
        direct_ref.stop()
        ctx.hangar.client("bedrock-agentcore").stop_runtime_session(agentRuntimeArn=arn, runtimeSessionId=session)
    return results
