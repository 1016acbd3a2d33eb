"""bench/targets.py: every target of issue 13 gets a row that says met, by how much it is missed, or not measured."""

from __future__ import annotations

from bench import targets

RESULTS = {
    "new_session": {
        "echo_sdk": {
            "hangar_template": {"p50_ms": 8.0, "p99_ms": 41.5},
            "hangar_cold": {"p50_ms": 180.0},
            "plain_process": {"p50_ms": 150.0},
        },
        "echo_agentcore": {
            "hangar_template": {"p50_ms": 12.5, "p99_ms": 30.0},
            "hangar_cold": {"p50_ms": 260.0},
            "plain_process": {"p50_ms": 240.0},
        },
    },
    "density": {
        "idle_100": {"sessions": 100, "opened": 100, "uss_mib_per_session": 7.0, "idle_cpu_core_percent": 0.5},
        "idle_1000": {"sessions": 1000, "opened": 1000, "uss_mib_per_session": 9.5, "with_idle_over_alone_p50": 1.1},
        "idle_100_cold": {"sessions": 1000, "opened": 1000, "uss_mib_per_session": 30.0},
        "churn_fork": {"clients": 8, "sessions_per_s": 40.0, "first_byte": {"p50_ms": 25.0}},
    },
}


def test_met_missed_and_by_how_much() -> None:
    rows = {row[0]: row for row in targets.target_rows(RESULTS)}
    sdk = rows["1. new session first byte p50 / p99, trivial, hangar.sdk"]
    assert sdk[2] == "8.0 ms / 41.5 ms"
    assert sdk[3] == "p50 met; p99 missed by 1.5 ms"
    assert rows["1. the same, unmodified bedrock-agentcore SDK"][3] == "p50 missed by 2.5 ms; p99 met"
    assert rows["3. sustained new sessions/s (8 clients), first byte p50 meanwhile"][3] == (
        "rate missed by 60.0/s; first byte met"
    )
    assert rows["4. new-session p50 with 1000 alive vs none"][3] == "met"  # the largest forked count, not the cold one
    assert rows["5. idle sessions alive / unique memory each / CPU of 100 idle"][3] == (
        "count met; memory missed by 1.5 MiB; CPU met"
    )
    cold = rows["6. cold start through Hangar vs plain python main.py (p50)"]
    assert cold[2:] == ("180.0 ms vs 150.0 ms (+30.0 ms)", "missed by 5.0 ms over the +25 ms")
    assert rows["6. the same, unmodified bedrock-agentcore SDK"][2:] == ("260.0 ms vs 240.0 ms (+20.0 ms)", "met")


def test_a_suite_that_did_not_run_is_not_measured_never_met() -> None:
    rows = targets.target_rows({})
    assert len(rows) == 9
    smoke = {"density": {"idle_6": {"sessions": 6, "with_idle_over_alone_p50": 0.9}}}
    assert targets.target_rows(smoke)[4][3] == "met (at 6 alive, not 1,000)"
    assert all(row[3] != "met" and "not measured" in row[3] for row in rows)


def test_published_peers_are_labelled_as_such() -> None:
    text = targets.markdown(RESULTS)
    assert "| peer | published, not measured here |" in text
    assert all(name in text for name, _ in targets.PUBLISHED)
