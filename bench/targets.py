"""Issue 13's targets, each beside what this run measured and by how much it is missed.

One row per target of the issue's table (``make bench`` prints them after the headline table, and ``latest.md``
has them): what, the target, the measured value, and ``met`` or ``missed by`` (the distance in the target's own
unit: ms, x, sessions/s, MiB, percentage points). A target whose suite did not run (``--only``) says so instead of
passing. Peers' published numbers are listed below the targets, labelled as quoted, never as measured.
"""

from __future__ import annotations

from typing import Any

Row = tuple[str, str, str, str]  # target, goal, measured, verdict

# Quoted in issue 13 from the peers' own announcements and public measurements; not measured on this machine.
PUBLISHED = (
    ("AgentCore Runtime, cold start (published)", "about 2 s"),
    ("Blaxel resume, Tencent CubeSandbox create (announced)", "25-50 ms"),
    ("Daytona, E2B new sandbox (measured by others)", "110-440 ms"),
)
# Peers measured in this run by bench/suites/peers.py: the same trivial agent as a new container, to its first byte.
MEASURED_PEERS = (
    ("podman", "podman run --rm, new container"),
    ("podman_runsc", "podman run --rm --runtime runsc (gVisor), new container"),
)


def _get(results: dict[str, Any], *path: str) -> Any:
    value: Any = results
    for key in path:
        if not isinstance(value, dict) or key not in value:
            return None
        value = value[key]
    return value


def _at_most(measured: float | None, goal: float, unit: str) -> str:
    if measured is None:
        return "not measured in this run"
    return "met" if measured <= goal else f"missed by {measured - goal:,.1f}{unit}"


def _at_least(measured: float | None, goal: float, unit: str) -> str:
    if measured is None:
        return "not measured in this run"
    return "met" if measured >= goal else f"missed by {goal - measured:,.1f}{unit}"


def _both(first: str, second: str, names: tuple[str, str] = ("p50", "p99")) -> str:
    return "met" if first == second == "met" else f"{names[0]} {first}; {names[1]} {second}"


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value:,.1f} ms"


def _latency_row(results: dict[str, Any], label: str, agent: str, p50: float, p99: float) -> Row:
    summary = _get(results, "new_session", agent, "hangar_template") or {}
    got50, got99 = summary.get("p50_ms"), summary.get("p99_ms")
    verdict = _both(_at_most(got50, p50, " ms"), _at_most(got99, p99, " ms"))
    return (label, f"<= {p50:g} / {p99:g} ms", f"{_ms(got50)} / {_ms(got99)}", verdict)


def target_rows(results: dict[str, Any]) -> list[Row]:
    rows = [
        _latency_row(results, "1. new session first byte p50 / p99, trivial, hangar.sdk", "echo_sdk", 10, 40),
        _latency_row(results, "1. the same, unmodified bedrock-agentcore SDK", "echo_agentcore", 10, 40),
        _latency_row(results, "2. the same, LangGraph agent", "heavy", 20, 50),
    ]
    churn = _get(results, "density", "churn_fork") or {}
    rate, first = churn.get("sessions_per_s"), _get(churn, "first_byte", "p50_ms")
    rows.append(
        (
            f"3. sustained new sessions/s ({churn.get('clients', 8)} clients), first byte p50 meanwhile",
            ">= 100/s, <= 30 ms",
            f"{'-' if rate is None else f'{rate}/s'}, {_ms(first)}",
            _both(_at_least(rate, 100, "/s"), _at_most(first, 30, " ms"), ("rate", "first byte")),
        )
    )
    idle = _largest_idle(results)
    alive_ratio = idle.get("with_idle_over_alone_p50")
    alone, during = _get(idle, "new_session_alone", "p50_ms"), _get(idle, "new_session_with_idle", "p50_ms")
    rows.append(
        (
            f"4. new-session p50 with {idle.get('sessions', '?')} alive vs none",
            "<= 1.2x (1,000 alive)",
            "-" if alive_ratio is None else f"{alive_ratio:.2f}x ({_ms(during)} vs {_ms(alone)})",
            _at_most(alive_ratio, 1.2, "x") + _short_of(idle.get("sessions"), 1000),
        )
    )
    hundred = _get(results, "density", "idle_100") or {}
    cpu = hundred.get("idle_cpu_core_percent")
    uss = idle.get("uss_mib_per_session")
    rows.append(
        (
            "5. idle sessions alive / unique memory each / CPU of 100 idle",
            "1,000 / <= 8 MiB / <= 1 % of a core",
            f"{idle.get('opened', '-')} / {'-' if uss is None else f'{uss:.1f} MiB'} / "
            f"{'-' if cpu is None else f'{cpu:.2f} %'}",
            "; ".join(
                (
                    f"count {_at_least(idle.get('opened'), 1000, '')}",
                    f"memory {_at_most(uss, 8, ' MiB')}",
                    f"CPU {_at_most(cpu, 1, ' points')}",
                )
            ),
        )
    )
    labels = (
        "6. cold start through Hangar vs plain python main.py (p50)",
        "6. the same, unmodified bedrock-agentcore SDK",
    )
    for agent, label in zip(("echo_sdk", "echo_agentcore"), labels, strict=True):
        cold, plain = (_get(results, "new_session", agent, k, "p50_ms") for k in ("hangar_cold", "plain_process"))
        over = None if cold is None or plain is None else cold - plain
        rows.append(
            (
                label,
                "<= plain + 25 ms",
                f"{_ms(cold)} vs {_ms(plain)}" + ("" if over is None else f" ({over:+,.1f} ms)"),
                _at_most(over, 25, " ms over the +25 ms"),
            )
        )
    overhead = _get(results, "warm_invoke", "c1", "p50_overhead_ms")
    share = _get(results, "warm_invoke", "c32", "throughput_vs_direct")
    rows.append(
        (
            "7. warm invoke overhead p50 (1 client); throughput vs direct (32 clients)",
            "<= +0.3 ms; >= 90 %",
            f"{'-' if overhead is None else f'{overhead:+.2f} ms'}; {'-' if share is None else f'{share:.0%}'}",
            f"overhead {_at_most(overhead, 0.3, ' ms')}; throughput "
            + _at_least(None if share is None else share * 100, 90, " points"),
        )
    )
    return rows


def _short_of(count: int | None, goal: int) -> str:
    """A verdict measured with fewer sessions than the target names (a smoke run) says so."""
    return f" (at {count} alive, not {goal:,})" if count is not None and count < goal else ""


def _largest_idle(results: dict[str, Any]) -> dict[str, Any]:
    """The forked idle-sessions measurement with the most sessions (1,000 in a full run)."""
    density = _get(results, "density") or {}
    forked = [
        v for k, v in density.items() if k.startswith("idle_") and not k.endswith("_cold") and isinstance(v, dict)
    ]
    return max(forked, key=lambda v: v.get("sessions", 0), default={})


def peer_rows(results: dict[str, Any]) -> list[tuple[str, str, str]]:
    """Hangar's new session of the trivial agent beside a new container of it on this machine, in this run."""
    rows = []
    for kind, label in (("hangar_template", "forked"), ("hangar_cold", "cold")):
        got = _get(results, "new_session", "echo_sdk", kind) or {}
        p50, p99 = got.get("p50_ms"), got.get("p99_ms")
        rows.append(
            (
                f"Hangar new session ({label}), hangar.sdk",
                f"{_ms(p50)} / {_ms(p99)}",
                "not measured in this run" if p50 is None else f"measured in this run (n={got.get('n')})",
            )
        )
    for key, label in MEASURED_PEERS:
        got = _get(results, "peers", key)
        if not isinstance(got, dict):
            rows.append((label, "-", "not measured in this run"))
        elif not got.get("available"):
            rows.append((label, "-", f"not available: {got.get('reason')}"))
        else:
            source = f"measured in this run ({got.get('runtime')}, n={got.get('n')})"
            rows.append((label, f"{_ms(got.get('p50_ms'))} / {_ms(got.get('p99_ms'))}", source))
    return rows


def markdown(results: dict[str, Any]) -> str:
    lines = ["| target | goal | measured | verdict |", "|---|---|---|---|"]
    lines += ["| " + " | ".join(row) + " |" for row in target_rows(results)]
    lines += ["", "| same trivial agent, new session or container | first byte p50 / p99 | source |", "|---|---|---|"]
    lines += ["| " + " | ".join(row) + " |" for row in peer_rows(results)]
    lines += ["", "| peer | published, not measured here |", "|---|---|"]
    lines += [f"| {name} | {value} |" for name, value in PUBLISHED]
    return "\n".join(lines) + "\n"
