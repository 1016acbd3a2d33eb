"""The benchmark harness runs end to end (``python -m bench --smoke``: a few iterations of every suite).

No thresholds: this only keeps ``bench/`` from rotting. It fails when a suite raises, and checks that the run
wrote its table, JSON (with the machine described) and chart. The run writes into a temporary directory
(``--out``): nothing in the checkout changes, neither the published ``latest.*`` of a full run nor anything else
under ``bench/results``. The soak runs for its smoke length (about a minute): every kind of its traffic ran
without an error and the stopped server left nothing on the host (its flatness verdict needs a long run and is
not asserted).
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
RESULTS = ROOT / "bench" / "results"


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_bench_smoke_runs_every_suite(tmp_path: Path) -> None:
    before = _listing(RESULTS)
    done = subprocess.run(
        [sys.executable, "-m", "bench", "--smoke", "--out", str(tmp_path)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=840,
        check=False,
    )
    assert done.returncode == 0, f"bench --smoke failed:\n{done.stdout[-4000:]}\n{done.stderr[-4000:]}"
    assert _listing(RESULTS) == before  # the checkout's results are untouched
    report = json.loads((tmp_path / "smoke.json").read_text())
    assert report["machine"]["cores"] and report["machine"]["kernel"] and report["machine"]["mode"] == "smoke"
    suites = report["results"]
    assert not [name for name, value in suites.items() if "error" in value]
    for agent in ("echo_sdk", "heavy"):
        for kind in ("hangar_template", "hangar_cold", "hangar_warm_pool", "plain_process"):
            assert suites["new_session"][agent][kind]["n"] > 0, (agent, kind)
    shapes = suites["server_shapes"]  # async-started servers beside the HTTP agents, every sample forked
    assert all(shapes[name]["hangar_fork"]["n"] > 0 for name in ("echo_sdk", "mcp_server", "fastapi_async")), shapes
    density = suites["density"]
    assert density["churn_fork"]["sessions"] > 0 and density["churn_cold"]["sessions"] > 0
    assert [v["start_kinds"] for k, v in density.items() if k.startswith("idle_")] == [
        {"fork": 3},
        {"fork": 6},
        {"cold": 3},
    ]
    soak = suites["soak"]
    assert soak["errors"] == 0, soak["first_errors"]
    assert all(counts["ok"] > 0 for counts in soak["operations"].values()), soak["operations"]
    left = {k: v for k, v in soak["leftovers"].items() if k not in ("sandboxes_seen", "sessions_started")}
    assert set(left.values()) <= {0, None}, left
    assert soak["leftovers"]["sessions_started"] > 0
    assert {"rss_mib", "fds", "threads", "asyncio_tasks"} <= set(soak["series"])
    assert all(soak["series"][name]["n"] > 0 for name in ("rss_mib", "fds", "threads", "asyncio_tasks"))
    assert (tmp_path / "smoke.png").stat().st_size > 0
    assert (tmp_path / "smoke.md").read_text().count("| soak") >= 4
    assert "new session" in done.stdout and "soak" in done.stdout


def _listing(folder: Path) -> dict[str, int]:
    return {path.name: path.stat().st_mtime_ns for path in folder.iterdir()} if folder.exists() else {}
