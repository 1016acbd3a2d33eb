"""Print the results as a table, write JSON and a PNG chart."""

from __future__ import annotations

import json
from pathlib import Path

from rich.console import Console
from rich.table import Table

RESULTS = Path(__file__).resolve().parent / "results"


def _rows(results: dict[str, object]) -> list[tuple[str, str, str]]:
    rows: list[tuple[str, str, str]] = []

    def walk(prefix: str, value: object) -> None:
        if isinstance(value, dict):
            for key, inner in value.items():
                walk(f"{prefix}.{key}" if prefix else key, inner)
        else:
            suite, _, metric = prefix.partition(".")
            rows.append((suite, metric, str(value)))

    walk("", results)
    return rows


def print_table(results: dict[str, object]) -> None:
    table = Table(title="Hangar benchmarks")
    table.add_column("suite")
    table.add_column("metric")
    table.add_column("value", justify="right")
    for row in _rows(results):
        table.add_row(*row)
    Console().print(table)


def write(results: dict[str, object], machine: dict[str, object]) -> Path:
    RESULTS.mkdir(exist_ok=True)
    target = RESULTS / "latest.json"
    target.write_text(json.dumps({"machine": machine, "results": results}, indent=2))
    _chart(results, RESULTS / "latest.png")
    return target


def _chart(results: dict[str, object], target: Path) -> None:
    """Bars of p50 latency per comparison: Hangar next to its floor."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return
    bars: list[tuple[str, float]] = []
    new_session = results.get("new_session", {})
    if isinstance(new_session, dict):
        for agent, values in new_session.items():
            if isinstance(values, dict) and "hangar" in values:
                bars.append((f"new session {agent}\nhangar", values["hangar"].get("p50_ms", 0)))
                bars.append((f"new session {agent}\nplain", values["plain_process"].get("p50_ms", 0)))
    warm = results.get("warm_invoke", {})
    if isinstance(warm, dict):
        for level, values in warm.items():
            if isinstance(values, dict) and "hangar" in values:
                bars.append((f"warm {level}\nhangar", values["hangar"]["p50_ms"]))
                bars.append((f"warm {level}\ndirect", values["direct_uvicorn"]["p50_ms"]))
    if not bars:
        return
    figure, axis = plt.subplots(figsize=(max(6, len(bars) * 0.9), 4))
    axis.bar([label for label, _ in bars], [value for _, value in bars], color=["#1f77b4", "#aaaaaa"] * len(bars))
    axis.set_yscale("log")
    axis.set_ylabel("p50 latency, ms (log)")
    axis.tick_params(axis="x", labelsize=7)
    figure.tight_layout()
    figure.savefig(target, dpi=110)
    plt.close(figure)
