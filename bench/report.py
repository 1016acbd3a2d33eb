"""Print the results as a table, write JSON and a PNG chart.

The printed table is the headline: one row per comparison, Hangar next to its floor and the ratio. Every raw
number (n, p50, p99, mean, errors) is in ``latest.json``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from bench import targets
from bench.suites import cluster as cluster_suite

RESULTS = Path(__file__).resolve().parent / "results"

Row = tuple[str, str, str, str, str]  # what, hangar, floor, floor name, ratio / overhead


def _get(results: dict[str, Any], *path: str) -> Any:
    value: Any = results
    for key in path:
        if not isinstance(value, dict) or key not in value:
            return None
        value = value[key]
    return value


def _ms(value: Any) -> str:
    return "-" if value is None else f"{value:,.1f} ms" if value >= 10 else f"{value:.2f} ms"


def _x(value: Any) -> str:
    return "-" if value is None else f"{value:.2f}x"


def headline(results: dict[str, Any]) -> list[Row]:
    rows: list[Row] = []
    for agent in ("echo_sdk", "echo_agentcore", "heavy"):
        phases = _get(results, "profile_start", agent)
        if isinstance(phases, dict) and "total_ms" in phases:
            steps = ("host_prepare", "launch", "supervisor_ready", "agent_ready")
            split = " + ".join(f"{step.replace('_', ' ')} {phases[f'{step}_ms']:.0f}" for step in steps)
            rows.append(
                (
                    f"profile: cold sandbox start to /ping, {agent}",
                    _ms(phases["total_ms"]),
                    _ms(phases["plain_process_to_ping_ms"]),
                    "python main.py to /ping",
                    split,
                )
            )
        fork = phases.get("fork") if isinstance(phases, dict) else None
        for mode in ("prepared", "inline"):
            timed = fork.get(mode) if isinstance(fork, dict) else None
            if not isinstance(timed, dict) or "total_ms" not in timed:
                continue
            steps = ("prepare", "finish_fork", "sandbox_ready", "agent_ping")
            split = " + ".join(f"{step.replace('_', ' ')} {timed[f'{step}_ms']:.1f}" for step in steps)
            ahead = fork.get("prepare_ahead_ms", {}).get("total")  # type: ignore[union-attr]
            note = f"; prepared ahead in {_ms(ahead)}" if mode == "prepared" and ahead else ""
            if "second_ping_ms" in timed:
                note += f"; a second /ping {timed['second_ping_ms']:.1f}"
            if "first_invoke_ms" in timed:
                note += f"; then first /invocations {timed['first_invoke_ms']:.1f}"
            if "session_cpu_ms" in timed:
                cpu = ("session", "template", "host")
                note += "; CPU " + ", ".join(f"{who} {timed[f'{who}_cpu_ms']:.0f}" for who in cpu) + " ms"
            rows.append(
                (
                    f"profile: forked sandbox start to /ping ({mode}), {agent}",
                    _ms(timed["total_ms"]),
                    _ms(phases["plain_process_to_ping_ms"]),
                    "python main.py to /ping",
                    split + note,
                )
            )
    for agent in ("echo_sdk", "echo_agentcore", "heavy"):
        base = ("new_session", agent)
        plain = _get(results, *base, "plain_process", "p50_ms")
        for kind in ("hangar_template", "hangar_warm_pool", "hangar_cold"):
            mine = _get(results, *base, kind, "p50_ms")
            p99 = _get(results, *base, kind, "p99_ms")
            if mine is not None:
                label = f"new session p50 (p99), {agent}, {kind.removeprefix('hangar_').replace('_', ' ')}"
                ratio = f"plain/hangar {_x(plain / mine)}" if plain and mine else "-"
                if kind == "hangar_template":
                    ratio += f"; cold/template {_x(_get(results, *base, 'cold_over_template_p50'))}"
                rows.append((label, f"{_ms(mine)} ({_ms(p99)})", _ms(plain), "python main.py", ratio))
    for level, values in (_get(results, "warm_invoke") or {}).items():
        if not isinstance(values, dict) or "hangar" not in values:
            continue
        hangar, floor, ref = values["hangar"], values["direct_uvicorn"], values["bedrock_agentcore_direct"]
        rows.append(
            (
                f"warm invoke {level} p50 (p99)",
                f"{_ms(hangar['p50_ms'])} ({_ms(hangar['p99_ms'])})",
                f"{_ms(floor['p50_ms'])} ({_ms(floor['p99_ms'])})",
                f"uvicorn; agentcore app {_ms(ref['p50_ms'])}",
                f"{values['p50_overhead_ms']:+.2f} ms",
            )
        )
        rows.append(
            (
                f"warm invoke {level} throughput",
                f"{hangar['rps']:,.0f}/s",
                f"{floor['rps']:,.0f}/s",
                f"uvicorn; agentcore app {ref['rps']:,.0f}/s",
                f"{values['throughput_vs_direct']:.0%}" if values["throughput_vs_direct"] else "-",
            )
        )
    stream = _get(results, "streaming") or {}
    if "hangar" in stream:
        rows.append(
            (
                "SSE 1,000 events: first event p50",
                _ms(stream["hangar"]["first_event"]["p50_ms"]),
                _ms(stream["direct"]["first_event"]["p50_ms"]),
                "agent directly",
                f"{stream['first_event_overhead_ms']:+.2f} ms",
            )
        )
        rows.append(
            (
                "SSE 1,000 events: events/s",
                f"{stream['hangar']['events_per_s_p50']:,}",
                f"{stream['direct']['events_per_s_p50']:,}",
                "agent directly",
                f"{stream['events_per_s_vs_direct']:.0%}" if stream["events_per_s_vs_direct"] else "-",
            )
        )
    forked = _get(results, "new_session", "echo_sdk", "hangar_template", "p50_ms")
    for key, label in targets.MEASURED_PEERS:
        container = _get(results, "peers", key) or {}
        if container.get("available"):
            note = f"{_x(forked / container['p50_ms']) if forked else '-'}; peer p99 {_ms(container['p99_ms'])}"
            rows.append(
                (f"new session vs peer: {label}, first byte p50", _ms(forked), _ms(container["p50_ms"]), label, note)
            )
        elif container:
            rows.append((f"peer: {label}", "-", "-", "", f"not available: {container.get('reason')}"))
    peer = _get(results, "peer_langgraph") or {}
    if "run_wait" in peer:
        rows.append(
            (
                "peer: langgraph dev thread+run wait p50",
                "-",
                _ms(peer["thread_create"]["p50_ms"] + peer["run_wait"]["p50_ms"]),
                f"first streamed event {_ms(peer['stream_first_event']['p50_ms'])}",
                "",
            )
        )
    for size, values in (_get(results, "payloads") or {}).items():
        if isinstance(values, dict) and "seconds" in values:
            rows.append(
                (
                    f"payload {size} round trip",
                    f"{values['seconds']:.2f} s",
                    "",
                    "",
                    f"peak RSS +{values['peak_rss_growth_mib']:.1f} MiB",
                )
            )
    density = _get(results, "density") or {}
    for name, values in density.items():
        if isinstance(values, dict) and "pss_mib_per_session" in values:
            kind = "cold" if name.endswith("_cold") else "forked"
            template = values.get("template") or {}
            note = f"whole tree +{values['tree_pss_delta_mib_per_session']:.1f} MiB/session"
            if template:
                note += (
                    f"; template once: PSS {template['pss_mib_at_rest']:.1f}, USS {template['uss_mib_at_rest']:.1f} MiB"
                )
            if values.get("failed_to_open"):
                first = (values.get("first_errors") or [""])[0]
                note += f"; only {values['opened']} of {values['sessions']} opened ({first[:120]})"
            rows.append(
                (
                    f"{values['sessions']} idle {kind} sessions: per session",
                    f"USS {values['uss_mib_per_session']:.1f} MiB (PSS {values['pss_mib_per_session']:.1f})",
                    "",
                    "",
                    note,
                )
            )
    fork, cold = density.get("churn_fork"), density.get("churn_cold")
    if isinstance(fork, dict) and isinstance(cold, dict):
        rows.append(
            (
                f"sustained new sessions/s, forked ({fork['clients']} clients: invoke new id, stop)",
                f"{fork['sessions_per_s']}/s",
                f"{cold['sessions_per_s']}/s",
                "cold (HANGAR_TEMPLATE=off)",
                f"{_x(density.get('churn_fork_over_cold'))}; first byte p50 {_ms(fork['first_byte'].get('p50_ms'))}"
                f" vs {_ms(cold['first_byte'].get('p50_ms'))}",
            )
        )
    rows += example_rows(_get(results, "examples") or {})
    rows += shape_rows(_get(results, "server_shapes") or {})
    rows += soak_rows(_get(results, "soak") or {})
    rows += cluster_suite.headline_rows(_get(results, "cluster") or {})  # gateway + remote node vs one process
    for suite, values in results.items():
        if isinstance(values, dict) and ("error" in values or "skipped" in values):
            rows.append((suite, values.get("error") or f"skipped: {values['skipped']}", "", "", ""))
    return rows


def example_rows(examples: dict[str, Any]) -> list[Row]:
    """Suite 10: each example's forked new session (first byte of its protocol's first request) beside plain."""
    rows: list[Row] = []
    for name, values in examples.items():
        if not isinstance(values, dict):
            continue
        if "error" in values:
            rows.append((f"example {name}: new session", values["error"][:200], "", "", ""))
            continue
        hangar, plain = values["hangar_fork"], values["plain_process"]
        cut = f" (n={values['rounds']}, time budget)" if values.get("rounds_cut_by_budget") else ""
        rows.append(
            (
                f"example {name} ({values['protocol']}): new session p50 (p99){cut}",
                f"{_ms(hangar.get('p50_ms'))} ({_ms(hangar.get('p99_ms'))})",
                _ms(plain.get("p50_ms")),
                "python main.py",
                f"plain/hangar {_x(values.get('plain_over_hangar_p50'))}",
            )
        )
    return rows


def shape_rows(shapes: dict[str, Any]) -> list[Row]:
    """Suite 11: new sessions of each server shape (async-started included), beside hangar.sdk's, all forked."""
    rows: list[Row] = []
    for name, values in shapes.items():
        if not isinstance(values, dict) or "hangar_fork" not in values:
            continue
        fork = values["hangar_fork"]
        verdict = "within 1.5x: met" if values.get("within_target") else "within 1.5x: missed"
        rows.append(
            (
                f"shape {name} ({values['protocol']}): new session p50 (p99), forked",
                f"{_ms(fork.get('p50_ms'))} ({_ms(fork.get('p99_ms'))})",
                _ms(shapes.get("echo_sdk", {}).get("hangar_fork", {}).get("p50_ms")),
                "echo_sdk forked",
                f"{_x(values.get('over_echo_sdk_p50'))} of echo_sdk; {verdict}",
            )
        )
    return rows


SOAK_LABELS = {
    "rss_mib": ("RSS", " MiB"),
    "fds": ("open fds", ""),
    "threads": ("threads", ""),
    "asyncio_tasks": ("asyncio tasks", ""),
    "sessions": ("live sessions", ""),
    "sandboxes": ("live sandboxes", ""),
}


COVERAGE = ("sandboxes_seen", "sessions_started")


def soak_rows(soak: dict[str, Any]) -> list[Row]:
    """One row per sampled series (first vs last window median, slope, verdict), then errors and leftovers."""
    if "series" not in soak:
        return []
    rows: list[Row] = []
    minutes, window = soak["seconds"] / 60, soak["window_s"] / 60
    for name, trend in soak["series"].items():
        if not trend.get("n"):
            continue
        label, unit = SOAK_LABELS.get(name, (name, ""))
        verdict = "flat" if trend["flat"] else "GROWS" + (" (monotonic)" if trend["monotonic_growth"] else "")
        rows.append(
            (
                f"soak {minutes:.0f} min: server {label}, first vs last {window:.1f} min median",
                f"{trend['first']:g}{unit} -> {trend['last']:g}{unit}",
                "",
                "",
                f"slope {trend['slope_per_hour']:+g}{unit}/h; {verdict}",
            )
        )
    kinds = ", ".join(f"{kind} {v['ok']}" for kind, v in soak["operations"].items())
    left = soak.get("leftovers") or {}
    counted = ", ".join(f"{k.replace('_', ' ')} {v}" for k, v in left.items() if k not in COVERAGE)
    rows.append((f"soak {minutes:.0f} min: operations and errors", f"{soak['errors']} errors", "", "", kinds))
    rows.append(
        (
            "soak: left on the host after the server stopped",
            counted,
            "",
            "",
            f"veths of {left.get('sandboxes_seen')} sandboxes seen ({left.get('sessions_started')} sessions started)",
        )
    )
    return rows


def print_table(results: dict[str, Any]) -> None:
    table = Table(title="Hangar benchmarks (medians; every comparison measured side by side in this run)")
    for name in ("measurement", "hangar", "floor", "floor is", "ratio / note"):
        table.add_column(name)
    for row in headline(results):
        table.add_row(*row)
    Console(width=160).print(table)
    goals = Table(title="Issue 13's targets: goal, measured in this run, verdict (published peers: latest.md)")
    for name in ("target", "goal", "measured", "verdict"):
        goals.add_column(name)
    for row in targets.target_rows(results):
        goals.add_row(*row)
    Console(width=160).print(goals)
    peers = Table(title="The same trivial agent: Hangar's new session beside a new container on this machine")
    for name in ("what", "first byte p50 / p99", "source"):
        peers.add_column(name)
    for peer_row in targets.peer_rows(results):
        peers.add_row(*peer_row)
    Console(width=160).print(peers)


def markdown(results: dict[str, Any]) -> str:
    """The same table as Markdown (README's Performance section is pasted from it)."""
    lines = ["| measurement | hangar | floor | floor is | ratio / note |", "|---|---|---|---|---|"]
    lines += ["| " + " | ".join(row) + " |" for row in headline(results)]
    return "\n".join(lines) + "\n\n" + targets.markdown(results)


def write(results: dict[str, Any], machine: dict[str, object], stem: str = "latest", out: Path = RESULTS) -> Path:
    """``<stem>.json``, ``.md`` and ``.png`` under ``out`` (bench/results by default; smoke runs use their own stem)."""
    out.mkdir(parents=True, exist_ok=True)
    target = out / f"{stem}.json"
    target.write_text(json.dumps({"machine": machine, "results": results}, indent=2))
    (out / f"{stem}.md").write_text(markdown(results))
    _chart(results, out / f"{stem}.png")
    return target


def _chart(results: dict[str, Any], target: Path) -> None:
    """Three panels: new-session p50 (log), warm invoke p50 by clients, warm invoke throughput by clients."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(1, 3, figsize=(15, 4.5))
    labels, values, colours = [], [], []
    palette = {
        "hangar_template": "#ff7f0e",
        "hangar_warm_pool": "#2ca02c",
        "hangar_cold": "#1f77b4",
        "plain_process": "#aaaaaa",
    }
    for agent in ("echo_sdk", "echo_agentcore", "heavy"):
        for kind, colour in palette.items():
            value = _get(results, "new_session", agent, kind, "p50_ms")
            if value is not None:
                labels.append(f"{agent}\n{kind.replace('hangar_', '').replace('_', ' ')}")
                values.append(value)
                colours.append(colour)
    axes[0].bar(labels, values, color=colours)
    axes[0].set_yscale("log")
    axes[0].set_title("new session, first byte p50 (ms, log)")
    axes[0].tick_params(axis="x", labelsize=7)
    warm = {k: v for k, v in (_get(results, "warm_invoke") or {}).items() if isinstance(v, dict) and "hangar" in v}
    levels = [int(k.removeprefix("c")) for k in warm]
    series = (("hangar", "Hangar"), ("direct_uvicorn", "uvicorn direct"), ("bedrock_agentcore_direct", "agentcore app"))
    for key, name in series:
        axes[1].plot(levels, [v[key]["p50_ms"] for v in warm.values()], marker="o", label=name)
        axes[2].plot(levels, [v[key]["rps"] for v in warm.values()], marker="o", label=name)
    axes[1].set_title("warm invoke p50 (ms) by clients")
    axes[2].set_title("warm invoke throughput (req/s) by clients")
    for axis in axes[1:]:
        axis.set_xscale("log", base=2)
        axis.legend(fontsize=8)
    figure.tight_layout()
    figure.savefig(target, dpi=110)
    plt.close(figure)
