"""0. Where a cold new session's time goes: one namespace sandbox start, phase by phase, plus the reference costs.

Runs the real ``NamespaceBackend`` in this process (its own state root and installation tag) and times each
step the backend takes by wrapping the functions it calls (measurement only, the steps themselves are unchanged):

- host preparation: state dir, uid lease, the tmpfs for /home and /tmp, the cgroup with its limits;
- launch: /etc files, seccomp compilation, the argument memfd, spawning ``sh`` (which joins the cgroups and
  execs setpriv -> bwrap -> supervisor);
- supervisor ready: until the supervisor inside the namespaces reports that it has spawned the agent;
- agent ready: until the agent answers ``GET /ping`` through the Unix socket (its Python start, imports, app
  build and uvicorn bind).

Reference costs measured beside it: the environment's ``python -c pass``, joining a fresh cgroup from ``sh``
(the cost the kernel charges for a cgroup migration), and the plain process started until ``/ping`` answers.
"""

from __future__ import annotations

import asyncio
import os
import statistics
import subprocess
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bench.context import AGENTS, BenchContext
from bench.direct import DirectAgent, agent_env
from bench.suites.new_session import REQUIREMENTS

STATE_ROOT = Path("/run/hangar/bench-profile")
TAG = "benchprof"


def _median_ms(samples: list[float]) -> float:
    return round(statistics.median(samples) * 1000, 1)


def run(ctx: BenchContext) -> dict[str, object]:
    if os.geteuid() != 0:
        return {"skipped": "the namespace backend needs root"}
    from hangar.sandbox.namespace import backend as ns_backend
    from hangar.sandbox.namespace.cgroups import detect

    if detect() is None:
        return {"skipped": "no usable cgroup controllers"}
    reps = ctx.n(7, 2)
    results: dict[str, object] = {}
    for agent, requirements in REQUIREMENTS.items():
        env = agent_env(agent, requirements)
        phases = asyncio.run(_profile_sandbox(ns_backend, AGENTS / agent, env, reps))
        plain = []
        for _ in range(reps):
            direct = DirectAgent(AGENTS / agent, env / "bin" / "python")
            try:
                plain.append(direct.start())
            finally:
                direct.stop()
        phases["plain_process_to_ping_ms"] = _median_ms(plain)
        results[agent] = phases
    results["python_c_pass_ms"] = _median_ms(
        [_timed(lambda: subprocess.run([str(env / "bin" / "python"), "-c", "pass"], check=True)) for _ in range(reps)]
    )
    results["cgroup_join_ms"] = _cgroup_join_ms(reps)
    return results


def _timed(step: Callable[[], object]) -> float:
    started = time.perf_counter()
    step()
    return time.perf_counter() - started


async def _profile_sandbox(ns_backend: Any, code_dir: Path, env_dir: Path, reps: int) -> dict[str, float]:
    from hangar.sandbox.base import Limits, SandboxSpec
    from hangar.sessions.agent_http import AgentHttp
    from hangar.sessions.probe import wait_ready

    backend = ns_backend.NamespaceBackend(state_root=STATE_ROOT, tag=TAG, egress="deny")
    await backend.cleanup_orphans()
    marks: dict[str, float] = {}
    originals = {name: getattr(ns_backend, name) for name in ("wait_ready",)}
    launch = ns_backend.NamespaceBackend._launch

    def timed_launch(self: Any, *args: Any) -> Any:
        marks["launch_begin"] = time.perf_counter()
        try:
            return launch(self, *args)
        finally:
            marks["launch_end"] = time.perf_counter()

    async def timed_supervisor(*args: Any) -> Any:
        try:
            return await originals["wait_ready"](*args)
        finally:
            marks["supervisor_ready"] = time.perf_counter()

    ns_backend.NamespaceBackend._launch = timed_launch
    ns_backend.wait_ready = timed_supervisor
    samples: dict[str, list[float]] = {
        "host_prepare": [],
        "launch": [],
        "supervisor_ready": [],
        "agent_ready": [],
        "total": [],
    }
    limits = Limits(memory_bytes=2048 << 20, cpus=1.0, pids=256, disk_bytes=512 << 20)
    try:
        for index in range(reps + 1):  # the first start warms caches and is not counted
            spec = SandboxSpec(
                sandbox_id=f"prof-{uuid.uuid4().hex[:12]}",
                code_dir=code_dir,
                env_dir=env_dir,
                command=(str(env_dir / "bin" / "python"), "main.py"),
                agent_port=8080,
                limits=limits,
                network="none",
            )
            started = time.perf_counter()
            sandbox = await backend.start(spec)
            client = AgentHttp(str(sandbox.socket_path))
            try:
                await wait_ready(client, sandbox, 120)
                done = time.perf_counter()
            finally:
                await client.aclose()
                await sandbox.stop()
            if index == 0:
                continue
            samples["host_prepare"].append(marks["launch_begin"] - started)
            samples["launch"].append(marks["launch_end"] - marks["launch_begin"])
            samples["supervisor_ready"].append(marks["supervisor_ready"] - marks["launch_end"])
            samples["agent_ready"].append(done - marks["supervisor_ready"])
            samples["total"].append(done - started)
    finally:
        ns_backend.NamespaceBackend._launch = launch
        ns_backend.wait_ready = originals["wait_ready"]
        await backend.cleanup_orphans()
    return {f"{name}_ms": _median_ms(values) for name, values in samples.items()}


def _cgroup_join_ms(reps: int) -> float:
    """``sh`` writing its pid into a fresh cgroup of each hierarchy, then exiting (what the launcher pays)."""
    from hangar.sandbox.base import Limits
    from hangar.sandbox.namespace.cgroups import Cgroup, detect
    from hangar.sandbox.namespace.launcher import JOIN_CGROUPS

    layout = detect()
    limits = Limits(memory_bytes=256 << 20, cpus=1.0, pids=64, disk_bytes=0)
    bare, joined = [], []
    for _ in range(reps):
        cgroup = Cgroup(layout, f"hangar-{TAG}-join-{uuid.uuid4().hex[:8]}")  # type: ignore[arg-type]
        cgroup.create(limits)
        try:
            files = cgroup.procs_files()
            time.sleep(0.2)  # "after idle": the case a new session meets
            joined.append(
                _timed(lambda f=files: subprocess.run(["sh", "-c", JOIN_CGROUPS, "j", str(len(f)), *f, "true"]))
            )
            bare.append(_timed(lambda: subprocess.run(["sh", "-c", "exec true"])))
        finally:
            asyncio.run(cgroup.kill_all())
            asyncio.run(cgroup.remove())
    return round(_median_ms(joined) - _median_ms(bare), 1)
