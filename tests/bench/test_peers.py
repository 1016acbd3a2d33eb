"""bench/suites/peers.py quick variant: a real new container of the trivial agent per peer, to its first byte.

It builds the image, starts one container per peer after the warm-up one and checks that each peer either has a
measured first byte or says why it is not available; podman itself must run where podman and buildah are installed
(it does on the project's machines), so a harness that stopped working fails here instead of reading "not available".
No timing thresholds.
"""

from __future__ import annotations

import shutil

import pytest
from bench.suites import peers

from bench import targets


@pytest.mark.timeout(300)
def test_every_peer_is_measured_or_says_why() -> None:
    measured = peers.measure(1)
    assert set(measured) == set(peers.PEERS)
    for name, result in measured.items():
        assert isinstance(result, dict)
        if result["available"]:
            assert result["n"] == 1 and result["p50_ms"] > 0, (name, result)
        else:
            assert result["reason"], name
    if shutil.which("podman") and shutil.which("buildah"):
        assert measured["podman"]["available"], measured["podman"]  # type: ignore[index]
    rows = {row[0]: row for row in targets.peer_rows({"peers": measured})}
    for key, label in targets.MEASURED_PEERS:
        result = measured[key]
        assert isinstance(result, dict)
        expected = "measured in this run" if result["available"] else "not available: "
        assert rows[label][2].startswith(expected)


def test_peer_rows_say_measured_unavailable_or_not_run() -> None:
    results = {
        "new_session": {"echo_sdk": {"hangar_template": {"n": 4, "p50_ms": 12.0, "p99_ms": 30.0}}},
        "peers": {
            "podman": {"available": True, "runtime": "runc", "n": 4, "p50_ms": 700.0, "p99_ms": 1100.0},
            "podman_runsc": {"available": False, "reason": "runsc is not installed"},
        },
    }
    rows = {row[0]: row[1:] for row in targets.peer_rows(results)}
    assert rows["Hangar new session (forked), hangar.sdk"] == ("12.0 ms / 30.0 ms", "measured in this run (n=4)")
    assert rows["Hangar new session (cold), hangar.sdk"][1] == "not measured in this run"
    assert rows["podman run --rm, new container"] == ("700.0 ms / 1,100.0 ms", "measured in this run (runc, n=4)")
    assert rows["podman run --rm --runtime runsc (gVisor), new container"][1] == "not available: runsc is not installed"
    assert all(row[2] == "not measured in this run" for row in targets.peer_rows({}))
    text = targets.markdown(results)
    assert "| podman run --rm, new container | 700.0 ms / 1,100.0 ms | measured in this run (runc, n=4) |" in text
