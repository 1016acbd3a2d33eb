"""11. Server shapes: new sessions of agents that serve from async code, beside the HTTP agents (issue 18).

Deployed side by side on one server with default settings, each sent its protocol's natural first request with a
new session id (stopped before the next one), rounds interleaved so a noisy moment hits every shape alike:

- ``echo_sdk`` (``hangar.sdk``) and ``echo_agentcore`` (the unmodified ``bedrock-agentcore`` SDK): the HTTP agents,
  ``uvicorn.run`` underneath; ``echo_sdk``'s p50 is the yardstick;
- ``mcp_server`` (examples/, MCP ``tools/list``): ``server.run(transport="streamable-http")``, i.e. ``anyio.run`` →
  ``uvicorn.Server.serve``;
- ``fastapi_async`` (bench/agents/): a FastAPI app under ``asyncio.run(main())`` → ``uvicorn.Server(config).serve()``;
- ``a2a_agent`` (examples/, A2A ``message/send``, a2a-sdk) and ``agui_agent`` (examples/, AG-UI run,
  ag-ui-protocol).

Every sample checks that the server reports ``startKind: fork`` (operator API): a shape that fell back to cold fails
the suite rather than being averaged in. The target: each shape's p50 within 1.5 times ``echo_sdk``'s.
"""

from __future__ import annotations

import json
import time
from concurrent.futures import ThreadPoolExecutor, wait
from dataclasses import dataclass
from pathlib import Path

import httpx

from bench.context import AGENTS, BenchContext
from bench.direct import ROOT
from bench.hangar_instance import new_session_id
from bench.stats import ratio, summarize_ms
from bench.suites.examples import A2A_MESSAGE, AGUI_RUN, MCP_ACCEPT

EXAMPLES = ROOT / "examples"
TARGET_RATIO = 1.5
YARDSTICK = "echo_sdk"


@dataclass(frozen=True)
class Shape:
    name: str
    folder: Path
    protocol: str | None
    body: dict[str, object]
    expect: bytes
    accept: str | None = None


PROMPT = {"prompt": "hello"}
SHAPES = (
    Shape("echo_sdk", AGENTS / "echo_sdk", None, PROMPT, b"hello"),
    Shape("echo_agentcore", AGENTS / "echo_agentcore", None, PROMPT, b"hello"),
    Shape(
        "mcp_server",
        EXAMPLES / "mcp_server",
        "MCP",
        {"jsonrpc": "2.0", "id": 1, "method": "tools/list", "params": {}},
        b"remember",
        MCP_ACCEPT,
    ),
    Shape("fastapi_async", AGENTS / "fastapi_async", None, PROMPT, b"hello"),
    Shape(
        "a2a_agent",
        EXAMPLES / "a2a_agent",
        "A2A",
        {"jsonrpc": "2.0", "id": 1, "method": "message/send", "params": {"message": A2A_MESSAGE}},
        b"completed",
    ),
    Shape("agui_agent", EXAMPLES / "agui_agent", "AGUI", AGUI_RUN, b"RUN_FINISHED"),
)


def _deploy(ctx: BenchContext, shape: Shape) -> str:
    extra: dict[str, object] = {}
    if shape.protocol:
        extra["protocolConfiguration"] = {"serverProtocol": shape.protocol}
    arn = ctx.hangar.deploy(shape.folder, name=f"bench_shape_{shape.name}", **extra)
    ctx.hangar.wait_template(arn)
    return arn


def _sample(ctx: BenchContext, client: httpx.Client, shape: Shape, arn: str) -> float:
    """One new session's first byte; raises unless it answered well and the server reports a fork."""
    url = ctx.hangar.invoke_url(arn)
    payload = json.dumps(shape.body).encode()
    ctx.hangar.wait_template(arn)  # a template that died is restarted: sample only a live one
    session = new_session_id()
    headers = ctx.hangar.signed_headers(url, payload, session)
    if shape.accept:
        headers["Accept"] = shape.accept
    started = time.perf_counter()
    with client.stream("POST", url, content=payload, headers=headers) as response:
        chunks = response.iter_raw()
        first = next(chunks, b"")
        elapsed = time.perf_counter() - started
        body = first + b"".join(chunks)
    reported = ctx.hangar.start_kind(session)
    ctx.hangar.stop_session(client, arn, session)
    if response.status_code != 200 or shape.expect not in body:
        raise RuntimeError(f"{shape.name}: {response.status_code} {body[:300]!r}")
    if reported != "fork":
        raise RuntimeError(f"{shape.name}: expected a fork start, the server reports {reported}")
    return elapsed


def run(ctx: BenchContext) -> dict[str, object]:
    rounds = ctx.n(20, 3)
    began = time.perf_counter()
    for service in ("s3", "bedrock-agentcore-control"):
        ctx.hangar.client(service)  # created once here: boto3 clients are shared by threads, not created by them
    with ThreadPoolExecutor(len(SHAPES)) as pool:  # the server builds their environments side by side
        deployed = {shape.name: pool.submit(_deploy, ctx, shape) for shape in SHAPES}
        wait(deployed.values())
    results: dict[str, object] = {"setup_s": round(time.perf_counter() - began, 1)}
    arns, samples, errors = {}, {shape.name: [] for shape in SHAPES}, {}
    for shape in SHAPES:
        try:
            arns[shape.name] = deployed[shape.name].result()
        except Exception as exc:
            errors[shape.name] = f"{type(exc).__name__}: {exc}"[:500]
    with httpx.Client(timeout=120) as client:
        for shape in SHAPES:  # one unmeasured sample each: the page cache warmed for every shape alike
            if shape.name in arns and shape.name not in errors and not ctx.smoke:
                try:
                    _sample(ctx, client, shape, arns[shape.name])
                except Exception as exc:
                    errors[shape.name] = f"{type(exc).__name__}: {exc}"[:500]
        for _ in range(rounds):
            for shape in SHAPES:
                if shape.name in errors or shape.name not in arns:
                    continue
                try:
                    samples[shape.name].append(_sample(ctx, client, shape, arns[shape.name]))
                except Exception as exc:  # one broken shape must not hide the others' numbers
                    errors[shape.name] = f"{type(exc).__name__}: {exc}"[:500]
    yardstick = summarize_ms(samples[YARDSTICK]).get("p50_ms")
    for shape in SHAPES:
        if shape.name in errors:
            results[shape.name] = {"error": errors[shape.name]}
            continue
        summary: dict[str, object] = {
            "protocol": shape.protocol or "HTTP",
            "hangar_fork": summarize_ms(samples[shape.name]),
        }
        over = ratio(summary["hangar_fork"].get("p50_ms"), yardstick)  # type: ignore[union-attr]
        summary["over_echo_sdk_p50"] = over
        summary["within_target"] = over is not None and over <= TARGET_RATIO
        results[shape.name] = summary
    if errors:
        results["error"] = f"server shapes failed: {', '.join(sorted(errors))}"
    return results
