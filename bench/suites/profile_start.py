"""0. Where a cold new session's time goes: one namespace sandbox start, phase by phase, plus the reference costs.

Runs the real ``NamespaceBackend`` in this process (its own state root and installation tag) and times each
step the backend takes by wrapping the functions it calls (measurement only, the steps themselves are unchanged):

- host preparation: state dir, uid lease, the tmpfs for /home and /tmp, the cgroup with its limits;
- launch: spawning ``sh`` (which joins the cgroups, then waits at its gate), then /etc files, seccomp, bwrap's
  arguments in their memfd;
- supervisor ready: the gate (with egress: the veth, made in a thread meanwhile, ``network``), then setpriv ->
  bwrap -> supervisor, until the supervisor inside the namespaces reports that it has spawned the agent;
- agent ready: until the agent answers ``GET /ping`` through the Unix socket (its Python start, imports, app
  build and uvicorn bind).

And forked starts the same way: ``backend.start_template(spec)`` once (reported as the template's start), then
``backend.fork(template, spec)`` per sample. Each template prepares its next fork ahead of the request path
(``forking.prepare_fork``: host preparation, the fork request, the child's announcement and unshare, the host's uid
map and cgroup move), so two cases are timed:

- ``prepared``: the fork finds its preparation done (a new session after a quiet moment): ``prepare`` (taking
  it), then ``finish_fork`` (``go`` until the session's pid 1 reports itself isolated), sandbox ready (the agent
  reports that uvicorn listens), agent /ping (``GET /ping`` answers through the Unix socket), and a second
  ``/ping`` on the same connection for comparison (``second_ping``), then the session's first ``/invocations``
  (``first_invoke``: what an SDK still pays on its first call), and the CPU each payer spent on the session
  (``session_cpu``: its cgroup, fork to first invocation; ``template_cpu``: the fork itself; ``host_cpu``: this
  process and its ``ip`` children, preparation to stop);
- ``inline``: the preparation was taken away first, so ``prepare`` runs on the request path (sessions arriving
  together);
- ``prepare_ahead``: the preparation itself, step by step (host prepare, template forks, child announces, child
  unshares, host map+move), whenever it ran.

Reference costs measured beside it: the environment's ``python -c pass``, joining a fresh cgroup from ``sh``
(the cost the kernel charges for a cgroup migration), and the plain process started until ``/ping`` answers.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import itertools
import os
import resource
import statistics
import subprocess
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal

from bench.context import AGENTS, BenchContext
from bench.direct import DirectAgent, agent_env
from bench.suites.new_session import REQUIREMENTS

STATE_ROOT = Path("/run/hangar/bench-profile")
STEP_S = 60.0  # bound on one fork, one template stop: a broken fork path fails the suite instead of hanging it
TAG = "benchprof"


def _median_ms(samples: list[float], digits: int = 1) -> float:
    return round(statistics.median(samples) * 1000, digits)


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
        phases: dict[str, object] = dict(asyncio.run(_profile_sandbox(ns_backend, AGENTS / agent, env, reps)))
        if agent == "echo_sdk":  # the bench server's runtimes are PUBLIC: its cold starts make a veth too
            phases["public"] = asyncio.run(_profile_sandbox(ns_backend, AGENTS / agent, env, reps, "public"))
        phases["fork"] = asyncio.run(_profile_fork(ns_backend, AGENTS / agent, env, ctx.n(15, 3)))
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


LIMITS = (2048 << 20, 1.0, 256, 512 << 20)  # memory, cpus, pids, disk: the server's defaults


def _spec(prefix: str, code_dir: Path, env_dir: Path, network: Literal["none", "public"] = "none") -> Any:
    from hangar.sandbox.base import Limits, SandboxSpec

    memory, cpus, pids, disk = LIMITS
    return SandboxSpec(
        sandbox_id=f"{prefix}-{uuid.uuid4().hex[:12]}",
        code_dir=code_dir,
        env_dir=env_dir,
        command=(str(env_dir / "bin" / "python"), "main.py"),
        agent_port=8080,
        limits=Limits(memory_bytes=memory, cpus=cpus, pids=pids, disk_bytes=disk),
        network=network,
    )


async def _profile_sandbox(
    ns_backend: Any, code_dir: Path, env_dir: Path, reps: int, network: Literal["none", "public"] = "none"
) -> dict[str, float]:
    """``network="public"`` (egress allowed, as the bench server's runtimes): the veth is made in a thread while the
    launcher joins the cgroups (``network``: its duration; the launcher waits for it at its gate)."""
    from hangar.sessions.agent_http import AgentHttp
    from hangar.sessions.probe import wait_ready

    egress = "allow" if network == "public" else "deny"
    backend = ns_backend.NamespaceBackend(state_root=STATE_ROOT, tag=TAG, egress=egress)
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

    create = ns_backend.network.create

    def timed_create(*args: Any) -> Any:
        began = time.perf_counter()
        try:
            return create(*args)
        finally:
            marks["network"] = time.perf_counter() - began

    ns_backend.NamespaceBackend._launch = timed_launch
    ns_backend.wait_ready = timed_supervisor
    ns_backend.network.create = timed_create
    samples: dict[str, list[float]] = {
        "network": [],
        "host_prepare": [],
        "launch": [],
        "supervisor_ready": [],
        "agent_ready": [],
        "total": [],
    }
    try:
        for index in range(reps + 1):  # the first start warms caches and is not counted
            marks.clear()
            spec = _spec("prof", code_dir, env_dir, network)
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
            if "network" in marks:
                samples["network"].append(marks["network"])
            samples["host_prepare"].append(marks["launch_begin"] - started)
            samples["launch"].append(marks["launch_end"] - marks["launch_begin"])
            samples["supervisor_ready"].append(marks["supervisor_ready"] - marks["launch_end"])
            samples["agent_ready"].append(done - marks["supervisor_ready"])
            samples["total"].append(done - started)
    finally:
        ns_backend.NamespaceBackend._launch = launch
        ns_backend.wait_ready = originals["wait_ready"]
        ns_backend.network.create = create
        await backend.cleanup_orphans()
    return {f"{name}_ms": _median_ms(values) for name, values in samples.items() if values}


def _around(
    original: Callable[..., Any], enter: Callable[[], Any], leave: Callable[[Any, Any, bool], None]
) -> Callable[..., Any]:
    """``original`` (sync or async, whichever the product has) called between ``enter()`` and
    ``leave(token, result, ok)``: measurement only, arguments and results pass through unchanged."""
    if inspect.iscoroutinefunction(original):

        async def wrapped_async(*args: Any, **kwargs: Any) -> Any:
            token, result, ok = enter(), None, False
            try:
                result = await original(*args, **kwargs)
                ok = True
                return result
            finally:
                leave(token, result, ok)

        return wrapped_async

    def wrapped(*args: Any, **kwargs: Any) -> Any:
        token, result, ok = enter(), None, False
        try:
            result = original(*args, **kwargs)
            ok = True
            return result
        finally:
            leave(token, result, ok)

    return wrapped


class _ForkClock:
    """Wraps the fork path's steps (measurement only) and keeps their timestamps.

    ``prepares``: one list of (step, seconds since its ``prepare_fork`` began) per preparation, ahead of the request
    path; ``marks``: the request path's last ``finish_fork`` and readiness times. A step whose function the product
    no longer has is simply not reported.
    """

    def __init__(self, backend: Any) -> None:
        from hangar.sandbox.namespace import forking, templates

        self.forking = forking
        self.template_class = templates.NamespaceTemplate
        self.backend = backend
        self.prepares: list[list[tuple[str, float]]] = []
        self.current: list[tuple[str, float]] | None = None
        self.marks: dict[str, float] = {}
        self.saved: dict[str, Any] = {}

    def _step(self, name: str) -> None:
        if self.current is not None:
            self.current.append((name, time.perf_counter()))

    def install(self) -> None:
        forking, backend, clock = self.forking, self.backend, self

        def begin_prepare() -> list[tuple[str, float]]:
            steps = [("begin", time.perf_counter())]
            clock.current = steps
            return steps

        def end_prepare(steps: Any, _result: Any, ok: bool) -> None:
            if ok:
                steps.append(("end", time.perf_counter()))
                clock.prepares.append(steps)
            clock.current = None

        def received(_token: Any, result: Any, ok: bool) -> None:
            if ok and result and result[0] in (b"C", b"U"):
                clock._step("child announces" if result[0] == b"C" else "child unshares")

        def mark(name: str) -> Callable[..., None]:
            return lambda *_: clock.marks.__setitem__(name, time.perf_counter())

        def step(name: str) -> Callable[..., None]:
            return lambda *_: clock._step(name)

        hooks: dict[str, tuple[Callable[[], Any], Callable[[Any, Any, bool], None]]] = {
            "prepare_fork": (begin_prepare, end_prepare),
            "finish_fork": (mark("finish_begin"), mark("finish_end")),
            "receive": (lambda: None, received),
            "_map_and_move": (lambda: None, step("host map+move")),
        }
        for name, (enter, leave) in hooks.items():
            if hasattr(forking, name):
                self.saved[name] = getattr(forking, name)
                setattr(forking, name, _around(self.saved[name], enter, leave))
        # until the request: state, uid lease, tmpfs, cgroup, sockets, seccomp; then the zygote's fork
        for name in ("request_fork",):
            if hasattr(self.template_class, name):
                self.saved[name] = getattr(self.template_class, name)
                setattr(
                    self.template_class, name, _around(self.saved[name], step("host prepare"), step("template forks"))
                )
        if hasattr(backend, "_ready"):
            backend._ready = _around(backend._ready, lambda: None, mark("sandbox_ready"))

    def uninstall(self) -> None:
        for name, original in self.saved.items():
            setattr(self.template_class if name == "request_fork" else self.forking, name, original)

    def prepare_steps(self, skip: int) -> dict[str, float]:
        """Median milliseconds of each preparation step (from the previous step), over the preparations after
        the first ``skip``."""
        durations: dict[str, list[float]] = {}
        for steps in self.prepares[skip:]:
            for (_, before), (name, at) in itertools.pairwise(steps):
                durations.setdefault("rest" if name == "end" else name, []).append(at - before)
            durations.setdefault("total", []).append(steps[-1][1] - steps[0][1])
        return {name: _median_ms(values, 2) for name, values in durations.items()}


async def _profile_fork(ns_backend: Any, code_dir: Path, env_dir: Path, reps: int) -> dict[str, object]:
    """One template, then ``reps`` forked starts (after one uncounted) that find their fork prepared, as a
    session's does when the template had time to prepare it, and ``reps`` that prepare it on the request path
    (as sessions arriving together do). Timed step by step (see the docstring)."""
    from hangar.sessions.agent_http import AgentHttp
    from hangar.sessions.probe import ping, wait_ready

    backend = ns_backend.NamespaceBackend(state_root=STATE_ROOT, tag=TAG, egress="deny")
    await backend.cleanup_orphans()
    clock = _ForkClock(backend)
    clock.install()
    phases = ("prepare", "finish_fork", "sandbox_ready", "agent_ping", "total")
    samples: dict[str, dict[str, list[float]]] = {"prepared": {}, "inline": {}}
    template = None
    try:
        began = time.perf_counter()
        template = await backend.start_template(_spec("proft", code_dir, env_dir))
        template_start = time.perf_counter() - began
        for mode in ("prepared", "inline"):
            for index in range(reps + 1):  # the first fork of each kind warms caches and is not counted
                await _settle(template)
                if mode == "inline" and getattr(template, "prepared", None) is not None:
                    prepared, template.prepared = template.prepared, None
                    await prepared.discard(backend.resources)
                template_cpu, host_cpu = _cpu_of(template), _host_cpu()
                started = time.perf_counter()
                sandbox = await asyncio.wait_for(backend.fork(template, _spec("proff", code_dir, env_dir)), STEP_S)
                forked = time.perf_counter()
                client = AgentHttp(str(sandbox.socket_path))
                try:
                    await wait_ready(client, sandbox, 30)
                    done = time.perf_counter()
                    await ping(client)  # the same request again: what a warm /ping costs, for comparison
                    second_ping = time.perf_counter() - done
                    invoked = time.perf_counter()
                    await _invoke(client)  # the session's first /invocations (the SDK's own first-call costs)
                    first_invoke = time.perf_counter() - invoked
                    session_cpu = _cpu_of(sandbox)
                finally:
                    await client.aclose()
                    await sandbox.stop()
                cpu = {
                    "session_cpu": session_cpu,  # pid 1, supervisor and agent: fork to the first invocation
                    "template_cpu": _cpu_of(template) - template_cpu,  # the fork itself (page tables)
                    "host_cpu": _host_cpu() - host_cpu,  # this process and its children (ip): prepare, check, stop
                }
                if index == 0:
                    continue
                begin = clock.marks.get("finish_begin", started)  # a step the product renamed counts as 0
                end = clock.marks.get("finish_end", begin)
                values = (
                    begin - started,
                    end - begin,
                    clock.marks.get("sandbox_ready", forked) - end,
                    done - forked,
                    done - started,
                )
                clock.marks.clear()
                for name, value in zip(phases, values, strict=True):
                    samples[mode].setdefault(name, []).append(value)
                samples[mode].setdefault("second_ping", []).append(second_ping)
                samples[mode].setdefault("first_invoke", []).append(first_invoke)
                for name, value in cpu.items():
                    samples[mode].setdefault(name, []).append(value)
        await _settle(template)
    finally:
        clock.uninstall()
        if template is not None:
            with contextlib.suppress(TimeoutError):  # a template that hangs is killed by the cleanup below
                await asyncio.wait_for(template.stop(), STEP_S)
        await backend.cleanup_orphans()
    result: dict[str, object] = {"template_start_ms": round(template_start * 1000, 1)}
    for mode, values in samples.items():
        result[mode] = {f"{name}_ms": _median_ms(v, 2) for name, v in values.items()}
    result["prepare_ahead_ms"] = clock.prepare_steps(skip=1)
    return result


async def _invoke(client: Any) -> None:
    response = await client.request("POST", "/invocations", [("content-type", "application/json")], b'{"p": 1}')
    async for _ in response.iter_raw():
        pass


def _cpu_of(sandbox: Any) -> float:
    """CPU seconds of a sandbox's (or template's) cgroup; 0 when the backend does not expose one."""
    cgroup = getattr(sandbox, "cgroup", None)
    return float(cgroup.cpu_seconds()) if cgroup is not None else 0.0


def _host_cpu() -> float:
    own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


async def _settle(template: Any) -> None:
    """Wait until the template's background preparation of its next fork (if the product does one) is done."""
    refill = getattr(template, "refill", None)
    if refill is not None:
        with contextlib.suppress(BaseException):
            await asyncio.wait_for(asyncio.shield(refill), STEP_S)


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
