"""10. The examples: each one's new-session first byte on Hangar beside the same agent run as a plain process.

Every example of ``examples/`` is deployed as it is (default settings: its sessions fork from the version's warm
template) and sent the protocol's natural first request with a new session id, stopped before the next one:

- MCP: ``tools/list`` (the example is stateless, as AgentCore recommends, so no ``initialize`` is needed first);
- A2A: ``message/send`` (JSON-RPC, the 0.3 method name that every A2A client speaks);
- AG-UI and HTTP (the framework agents): one invocation.

Each sample checks that the server reports ``startKind: fork``. The floor is ``python main.py`` of the same code in
a virtualenv holding the same requirements, with the same environment, timed from spawn to the first byte of the
same answer. The framework examples (LangGraph, Strands, CrewAI) call the tests' local model server (llama-cpp-
python on a tiny random GGUF, in a network namespace of its own): the first byte includes a real model call on
both sides. Samples are interleaved, Hangar then plain, so a noisy moment hits both.
"""

from __future__ import annotations

import json
import os
import subprocess
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor, wait
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import httpx
from tests.protocols.model_server import ModelServer, local_model_server

from bench.context import BenchContext
from bench.direct import ROOT, agent_env
from bench.hangar_instance import free_port, new_session_id
from bench.stats import ratio, summarize_ms

EXAMPLES = ROOT / "examples"
MCP_ACCEPT = "application/json, text/event-stream"
AGUI_RUN = {
    "threadId": "t",
    "runId": "r",
    "messages": [{"id": "m", "role": "user", "content": "hi"}],
    "state": {},
    "tools": [],
    "context": [],
    "forwardedProps": {},
}
# Each example's rounds stop once this much time went into them (after at least MIN_ROUNDS), so a slow framework
# (CrewAI starts in seconds as a plain process) keeps the suite bounded; ``rounds`` in the JSON says how many ran.
ROUNDS_BUDGET_S = 30.0
MIN_ROUNDS = 3
# A smoke run covers each protocol once and one framework (the model path); Strands and CrewAI take the full run.
SMOKE_EXAMPLES = ("mcp_server", "a2a_agent", "agui_agent", "langgraph")
A2A_MESSAGE = {"kind": "message", "messageId": "m-1", "role": "user", "parts": [{"kind": "text", "text": "a b"}]}


@dataclass(frozen=True)
class Example:
    """How to deploy one example and what its first request and answer are."""

    folder: str
    protocol: str | None  # serverProtocol, None for HTTP
    body: dict[str, object]
    plain_path: str  # where ``python main.py`` serves the protocol
    expect: bytes  # in a good answer: the check that a sample measured the real thing
    accept: str | None = None
    needs_model: bool = False
    env: dict[str, str] = field(default_factory=dict)

    @property
    def payload(self) -> bytes:
        return json.dumps(self.body).encode()


FRAMEWORK_PROMPT = {"prompt": "what is 2 plus 40?"}
CATALOGUE = (
    Example(
        "mcp_server",
        "MCP",
        {"jsonrpc": "2.0", "id": 1, "method": "tools/list", "params": {}},
        "/mcp",
        b"remember",
        accept=MCP_ACCEPT,
    ),
    Example(
        "a2a_agent",
        "A2A",
        {"jsonrpc": "2.0", "id": 1, "method": "message/send", "params": {"message": A2A_MESSAGE}},
        "/",
        b"completed",
    ),
    Example("agui_agent", "AGUI", AGUI_RUN, "/invocations", b"RUN_FINISHED"),
    Example("langgraph", None, FRAMEWORK_PROMPT, "/invocations", b"data", needs_model=True),
    Example("strands", None, FRAMEWORK_PROMPT, "/invocations", b"data", needs_model=True),
    Example("crewai", None, FRAMEWORK_PROMPT, "/invocations", b"answer", needs_model=True),
)


def model_env(model: ModelServer) -> dict[str, str]:
    """The framework examples' model settings, as the protocol tests deploy them."""
    return {
        "OPENAI_BASE_URL": model.base_url,
        "OPENAI_API_KEY": "local",
        "MODEL_ID": model.model,
        "MAX_TOKENS": "64",
        "TEMPERATURE": "0",
    }


def _requirements(example: Example) -> list[str]:
    lines = (EXAMPLES / example.folder / "requirements.txt").read_text().splitlines()
    return [line.strip() for line in lines if line.strip() and not line.strip().startswith("#")]


def _read_first(response: httpx.Response, started: float) -> tuple[float, bytes]:
    """Seconds to the first body byte, and the whole body (read after the clock stopped)."""
    chunks = response.iter_raw()
    first = next(chunks, b"")
    elapsed = time.perf_counter() - started
    return elapsed, first + b"".join(chunks)


def _hangar_samples(ctx: BenchContext, example: Example, arn: str, count: int) -> list[float]:
    url = ctx.hangar.invoke_url(arn)
    samples = []
    with httpx.Client(timeout=120) as client:
        for _ in range(count):
            ctx.hangar.wait_template(arn)  # a template that died is restarted: sample only a live one
            session = new_session_id()
            headers = ctx.hangar.signed_headers(url, example.payload, session)
            if example.accept:
                headers["Accept"] = example.accept
            started = time.perf_counter()
            with client.stream("POST", url, content=example.payload, headers=headers) as response:
                elapsed, body = _read_first(response, started)
            reported = ctx.hangar.start_kind(session)
            ctx.hangar.stop_session(client, arn, session)
            if response.status_code != 200 or example.expect not in body:
                raise RuntimeError(f"{example.folder} through Hangar: {response.status_code} {body[:300]!r}")
            if reported != "fork":
                raise RuntimeError(f"{example.folder}: expected a fork start, the server reports {reported}")
            samples.append(elapsed)
    return samples


def _plain_sample(example: Example, python: Path, env: dict[str, str], timeout: float = 120) -> float:
    """Spawn ``python main.py`` and send the first request until it answers; seconds from spawn to its first byte."""
    port = free_port()
    url = f"http://127.0.0.1:{port}{example.plain_path}"
    headers = {"Content-Type": "application/json", **({"Accept": example.accept} if example.accept else {})}
    started = time.perf_counter()
    process = subprocess.Popen(
        [str(python), "main.py"],
        cwd=EXAMPLES / example.folder,
        env={**os.environ, **env, "PORT": str(port), "A2A_PORT": str(port), "AGENT_URL": f"http://127.0.0.1:{port}/"},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        with httpx.Client(timeout=120) as client:
            while time.perf_counter() < started + timeout:
                if process.poll() is not None:
                    raise RuntimeError(f"{example.folder} exited with {process.returncode} before answering")
                try:
                    with client.stream("POST", url, content=example.payload, headers=headers) as response:
                        elapsed, body = _read_first(response, started)
                except httpx.TransportError:
                    time.sleep(0.002)
                    continue
                if response.status_code != 200 or example.expect not in body:
                    raise RuntimeError(f"{example.folder} as a plain process: {response.status_code} {body[:300]!r}")
                return elapsed
        raise RuntimeError(f"{example.folder} as a plain process never answered")
    finally:
        process.terminate()
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(10)


@contextmanager
def _model(ctx: BenchContext, wanted: bool) -> Iterator[ModelServer | None]:
    if not wanted:
        yield None
        return
    work = ctx.hangar.data_dir.parent / "examples-model"
    work.mkdir(exist_ok=True)
    with local_model_server(work) as running:
        yield running


def _deploy(ctx: BenchContext, example: Example, env: dict[str, str]) -> tuple[str, Path]:
    """Deploy the example and build its plain virtualenv; returns (ARN, plain python) once its template is alive."""
    extra: dict[str, object] = {"environmentVariables": env} if env else {}
    if example.protocol:
        extra["protocolConfiguration"] = {"serverProtocol": example.protocol}
    arn = ctx.hangar.deploy(EXAMPLES / example.folder, name=f"bench_example_{example.folder}", **extra)
    python = agent_env(f"example_{example.folder}", _requirements(example)) / "bin" / "python"
    ctx.hangar.wait_template(arn)
    return arn, python


def run(ctx: BenchContext) -> dict[str, object]:
    count = ctx.n(20, 3)
    chosen = [e for e in CATALOGUE if not ctx.smoke or e.folder in SMOKE_EXAMPLES]
    results: dict[str, object] = {}
    began = time.perf_counter()
    with ExitStack() as stack:
        model = stack.enter_context(_model(ctx, any(e.needs_model for e in chosen)))
        envs = {e.folder: model_env(model) if e.needs_model and model else {} for e in chosen}
        for service in ("s3", "bedrock-agentcore-control"):
            ctx.hangar.client(service)  # created once here: boto3 clients are shared by threads, not created by them
        # deployed side by side: the server builds their environments and starts their templates concurrently
        with ThreadPoolExecutor(len(chosen)) as pool:
            deployed = {e.folder: pool.submit(_deploy, ctx, e, envs[e.folder]) for e in chosen}
            wait(deployed.values())
        results["setup_s"] = round(time.perf_counter() - began, 1)  # model server, deploys, templates alive
        for example in chosen:
            env = envs[example.folder]
            try:
                arn, python = deployed[example.folder].result()
                if not ctx.smoke:  # warm the page cache for both contestants alike
                    _hangar_samples(ctx, example, arn, 1)
                    _plain_sample(example, python, env)
                ready = time.perf_counter()
                hangar, plain = [], []
                for done in range(count):  # interleaved, so a noisy moment hits both
                    if done >= MIN_ROUNDS and time.perf_counter() - ready > ROUNDS_BUDGET_S:
                        break
                    hangar += _hangar_samples(ctx, example, arn, 1)
                    plain.append(_plain_sample(example, python, env))
            except Exception as exc:  # one broken example must not hide the others' numbers
                results[example.folder] = {"error": f"{type(exc).__name__}: {exc}"[:500]}
                continue
            summary: dict[str, object] = {"hangar_fork": summarize_ms(hangar), "plain_process": summarize_ms(plain)}
            summary["plain_over_hangar_p50"] = ratio(
                summary["plain_process"].get("p50_ms"),  # type: ignore[union-attr]
                summary["hangar_fork"].get("p50_ms"),  # type: ignore[union-attr]
            )
            summary["protocol"] = example.protocol or "HTTP"
            summary["rounds"] = len(plain)
            summary["rounds_cut_by_budget"] = len(plain) < count
            summary["sampling_s"] = round(time.perf_counter() - ready, 1)
            results[example.folder] = summary
    failed = [name for name, value in results.items() if isinstance(value, dict) and "error" in value]
    if failed:  # at the suite's level too, where the smoke test and the table look for errors
        results["error"] = f"examples failed: {', '.join(failed)}"
    return results
