"""The benchmark harness runs end to end (``python -m bench --smoke``: a few iterations of every suite).

No thresholds: this only keeps ``bench/`` from rotting. It fails when a suite raises, and checks that the run
wrote its table, JSON (with the machine described) and chart. Smoke runs write ``bench/results/smoke.*``, never
the published ``latest.*`` of a full run.
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
def test_bench_smoke_runs_every_suite() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "bench", "--smoke"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=840,
        check=False,
    )
    assert done.returncode == 0, f"bench --smoke failed:\n{done.stdout[-4000:]}\n{done.stderr[-4000:]}"
    report = json.loads((RESULTS / "smoke.json").read_text())
    assert report["machine"]["cores"] and report["machine"]["kernel"] and report["machine"]["mode"] == "smoke"
    suites = report["results"]
    assert not [name for name, value in suites.items() if "error" in value]
    for agent in ("echo_sdk", "heavy"):
        for kind in ("hangar_template", "hangar_cold", "hangar_warm_pool", "plain_process"):
            assert suites["new_session"][agent][kind]["n"] > 0, (agent, kind)
    density = suites["density"]
    assert density["churn_fork"]["sessions"] > 0 and density["churn_cold"]["sessions"] > 0
    assert [v["start_kinds"] for k, v in density.items() if k.startswith("idle_")] == [
        {"fork": 3},
        {"fork": 6},
        {"cold": 3},
    ]
    assert (RESULTS / "smoke.png").stat().st_size > 0
    assert "new session" in done.stdout
