"""3. Peer: the LangGraph API server in memory (`langgraph dev`) running the same echo graph.

Measured: thread create, run wait on that thread, and time to the first streamed event. `langgraph dev` moves to
another port silently when its port is taken, so the port is pinned and the log is read to confirm it.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import httpx

from bench.context import AGENTS, BenchContext
from bench.hangar_instance import free_port
from bench.stats import summarize_ms


def _start(port: int, workdir: Path) -> subprocess.Popen[bytes]:
    """``langgraph dev`` on ``port`` in a copy of the graph's folder (it writes its state next to the graph)."""
    langgraph = Path(sys.executable).parent / "langgraph"
    shutil.copytree(AGENTS / "langgraph_echo", workdir, dirs_exist_ok=True)
    log = workdir / "langgraph.log"
    env = {**os.environ, "LANGGRAPH_CLI_NO_ANALYTICS": "1", "PYTHONPATH": str(workdir)}
    process = subprocess.Popen(
        [str(langgraph), "dev", "--no-browser", "--no-reload", "--host", "127.0.0.1", "--port", str(port)],
        cwd=workdir,
        env=env,
        stdout=log.open("wb"),
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"http://127.0.0.1:{port}/ok", timeout=1).status_code == 200:
                if f":{port}" not in log.read_text(errors="replace"):  # something else answered on our port
                    process.kill()
                    raise RuntimeError(f"langgraph dev did not say it serves on {port}: {log.read_text()[-2000:]}")
                return process
        except httpx.HTTPError:
            time.sleep(0.1)
        if process.poll() is not None:
            break
    process.kill()
    raise RuntimeError(f"langgraph dev did not answer on {port}: {log.read_text()[-2000:]}")


def run(ctx: BenchContext) -> dict[str, object]:
    if not (Path(sys.executable).parent / "langgraph").exists():
        return {"skipped": "langgraph-cli is not installed (pip install -e '.[bench]')"}
    reps = ctx.n(20, 2)
    port = free_port()
    process = _start(port, ctx.hangar.data_dir.parent / "langgraph_echo")
    base = f"http://127.0.0.1:{port}"
    create, wait, first_event = [], [], []
    try:
        with httpx.Client(timeout=60) as client:
            for _ in range(reps):
                started = time.perf_counter()
                thread = client.post(f"{base}/threads", json={}).json()["thread_id"]
                create.append(time.perf_counter() - started)
                started = time.perf_counter()
                client.post(
                    f"{base}/threads/{thread}/runs/wait", json={"assistant_id": "echo", "input": {"input": "hi"}}
                ).raise_for_status()
                wait.append(time.perf_counter() - started)
                started = time.perf_counter()
                with client.stream(
                    "POST",
                    f"{base}/threads/{thread}/runs/stream",
                    json={"assistant_id": "echo", "input": {"input": "hi"}},
                ) as response:
                    first = None
                    for line in response.iter_lines():
                        if first is None and line.startswith("data:"):
                            first = time.perf_counter() - started
                    if first is None:
                        raise RuntimeError(f"langgraph dev streamed no event (status {response.status_code})")
                    first_event.append(first)
    finally:
        os.killpg(process.pid, 15)
        process.wait(20)
    return {
        "thread_create": summarize_ms(create),
        "run_wait": summarize_ms(wait),
        "stream_first_event": summarize_ms(first_event),
    }
