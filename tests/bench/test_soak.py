"""The soak's pieces that can be checked without soaking: the asyncio-task gauge it samples, and its verdict rule.

The gauge is read from a real ``hangar serve`` (plain httpx, no credentials, as the soak scrapes it). The verdict
(``bench/suites/soak.py``'s ``trend``) is fed made-up series: flat with noise, a slow leak, a one-off step. The
whole soak runs, briefly, in ``test_bench_smoke.py``.
"""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest
from bench.report import soak_rows
from bench.suites.soak import RATIO, SLACK, trend
from prometheus_client.parser import text_string_to_metric_families

from tests.support.server import HangarServer


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[HangarServer]:
    running = HangarServer(data_dir=tmp_path_factory.mktemp("soak-gauge") / "data").start()
    try:
        yield running
    finally:
        running.stop()


def test_metrics_count_the_servers_asyncio_tasks(server: HangarServer) -> None:
    text = httpx.get(f"{server.url}/metrics", timeout=30).text
    families = {family.name: family for family in text_string_to_metric_families(text)}
    assert families["hangar_asyncio_tasks"].type == "gauge"
    (sample,) = families["hangar_asyncio_tasks"].samples
    assert sample.labels == {}
    assert sample.value >= 1  # at least the task serving this scrape


def _series(values: list[float], name: str = "rss_mib") -> list[dict[str, float]]:
    return [{"t": 10.0 * i, name: value} for i, value in enumerate(values)]


def test_noise_around_a_level_is_flat() -> None:
    values = [100.0 + (3 if i % 2 else -3) for i in range(60)]
    verdict = trend(_series(values), "rss_mib", window=100)
    assert verdict["flat"] and not verdict["monotonic_growth"]
    assert 97 <= verdict["first"] <= 103 and 97 <= verdict["last"] <= 103


def test_a_steady_leak_is_not_flat_and_has_its_slope() -> None:
    values = [100.0 + i for i in range(60)]  # +1 MiB every 10 s
    verdict = trend(_series(values), "rss_mib", window=100)
    assert not verdict["flat"] and verdict["monotonic_growth"]
    assert verdict["slope_per_hour"] == pytest.approx(360.0)
    assert verdict["last"] > verdict["first"] * RATIO


def test_growth_within_the_slack_is_flat_even_when_it_rises_throughout() -> None:
    slack = SLACK["threads"]
    values = [10.0 + slack * i / 59 for i in range(60)]  # creeps up by exactly the slack, no more
    verdict = trend(_series(values, "threads"), "threads", window=100)
    assert verdict["flat"] and not verdict["monotonic_growth"]


def test_a_one_off_step_beyond_ratio_and_slack_is_not_flat() -> None:
    values = [40.0] * 30 + [60.0] * 30
    verdict = trend(_series(values, "fds"), "fds", window=100)
    assert not verdict["flat"] and not verdict["monotonic_growth"]
    assert verdict["ratio"] == 1.5


def test_the_table_names_a_growing_series_and_what_was_left() -> None:
    soak = {
        "seconds": 300,
        "window_s": 67.5,
        "errors": 1,
        "operations": {"warm": {"ok": 5, "errors": 1}},
        "series": {"fds": trend(_series([40.0 + i for i in range(60)], "fds"), "fds", window=100), "threads": {"n": 0}},
        "leftovers": {"uid_leases": 0, "cgroups": 1, "sandboxes_seen": 7, "sessions_started": 9},
    }
    rows = soak_rows(soak)
    assert [row[0] for row in rows] == [
        "soak 5 min: server open fds, first vs last 1.1 min median",
        "soak 5 min: operations and errors",
        "soak: left on the host after the server stopped",
    ]
    assert "GROWS (monotonic)" in rows[0][4]
    assert rows[1][1] == "1 errors"
    assert rows[2][1] == "uid leases 0, cgroups 1" and rows[2][4] == "veths of 7 sandboxes seen (9 sessions started)"
