"""Forked spares at default settings (``spares=auto``): a real ``hangar serve`` with real namespace sandboxes, driven
through boto3 and seen through the operator API (``GET /hangar/sessions/``: ``startKind``/``spareKind`` per session,
``warmPool`` with its ready spares, their kinds, the sizes and claims).

What is proven: a version's first session forks, the next one claims a spare forked ahead (and a claimed sandbox is
never handed out again, nor a session's sandbox after it ended); the count follows the arrival rate up and back down
and to none once the version goes quiet; spares end when no endpoint serves their version; a version with session
storage never keeps spares (its sessions take the template's prepared fork). ``SpareSizer`` is checked alone too.
"""

from __future__ import annotations

import concurrent.futures
import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from hangar.config import Settings
from hangar.sessions.spares import SpareSizer
from tests.dataplane.support import deploy, new_session_id, operator, seeded_server, wait_for
from tests.support.agent_env import make_target
from tests.support.server import HangarServer

SCALE = 0.05  # lifecycles 20x faster: an idle timeout of 60 s is 3 s
WINDOW_S = 3.0
QUIET = {"idleRuntimeSessionTimeout": 120, "maxLifetime": 28800}  # quiet after 6 s (twice the window)
BUSY = {"idleRuntimeSessionTimeout": 1200, "maxLifetime": 28800}  # quiet after 60 s


@pytest.fixture(scope="module")
def server() -> Iterator[HangarServer]:
    env = {
        "HANGAR_SPARES": "auto",  # the default (the suite's conftest turns it off for tests that count forks)
        "HANGAR_SPARES_WINDOW_S": str(WINDOW_S),
        "HANGAR_SESSION_TIME_SCALE": str(SCALE),
        "HANGAR_SESSION_STORAGE_MIB": "64",
    }
    with seeded_server("hangar-spares-", ["testbed"], env=env) as hangar:
        if not operator(hangar)["templates"]["enabled"]:
            pytest.skip(f"forked spares need the namespace backend, this host has {operator(hangar)['backend']}")
        yield hangar


def _key(runtime: dict[str, Any]) -> str:
    return f"{runtime['agentRuntimeId']}/{runtime['agentRuntimeVersion']}"


def _pool(server: HangarServer) -> dict[str, Any]:
    return dict(operator(server)["warmPool"])


def _spares(server: HangarServer, runtime: dict[str, Any]) -> list[str]:
    return list(_pool(server)["ready"].get(_key(runtime), []))


def _session(server: HangarServer, session_id: str) -> dict[str, Any]:
    return next(s for s in operator(server)["sessions"] if s["runtimeSessionId"] == session_id)


def _template(server: HangarServer, runtime: dict[str, Any]) -> None:
    def alive() -> bool:
        state = operator(server)["templates"]["versions"].get(_key(runtime)) or {}
        return bool((state.get("template") or {}).get("alive"))

    wait_for(alive, timeout=180)


def _invoke(data: Any, runtime: dict[str, Any], session_id: str) -> int:
    response = data.invoke_agent_runtime(
        agentRuntimeArn=runtime["agentRuntimeArn"], runtimeSessionId=session_id, payload=json.dumps({"action": "count"})
    )
    return int(json.loads(response["response"].read())["count"])


def _stop(data: Any, runtime: dict[str, Any], session_id: str) -> None:
    data.stop_runtime_session(agentRuntimeArn=runtime["agentRuntimeArn"], runtimeSessionId=session_id)


def _processes_of(sandbox_id: str) -> int:
    """Processes whose cgroup names the sandbox."""
    count = 0
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit():
            try:
                count += sandbox_id in (proc / "cgroup").read_text()
            except OSError:
                continue
    return count


def test_the_next_session_claims_a_spare_forked_ahead(server: HangarServer, control: Any, data: Any) -> None:
    runtime = deploy(control, "testbed", lifecycleConfiguration=BUSY)
    _template(server, runtime)
    assert _spares(server, runtime) == []  # no session yet: no spare
    first = new_session_id()
    assert _invoke(data, runtime, first) == 1
    assert _session(server, first)["startKind"] == "fork"
    spare = wait_for(lambda: _spares(server, runtime), timeout=60)
    assert len(spare) == 1 and _pool(server)["spareKinds"][_key(runtime)] == ["fork"]
    second = new_session_id()
    assert _invoke(data, runtime, second) == 1  # its own interpreter: nothing of the first session
    claimed = _session(server, second)
    assert (claimed["startKind"], claimed["spareKind"], claimed["sandboxId"]) == ("warm", "fork", spare[0])
    refilled = wait_for(lambda: _spares(server, runtime), timeout=60)
    assert spare[0] not in refilled and _session(server, first)["sandboxId"] not in refilled  # never handed out again
    _stop(data, runtime, first)
    _stop(data, runtime, second)
    third = new_session_id()
    assert _invoke(data, runtime, third) == 1
    used = {_session(server, s)["sandboxId"] for s in (first, second)}
    assert _session(server, third)["sandboxId"] not in used  # an ended session's sandbox is gone, not recycled
    wait_for(lambda: all(_processes_of(s) == 0 for s in used), timeout=30)
    assert _pool(server)["claims"]["hit"] >= 2
    assert _claims_metric(server, "hit") >= 2 and _claims_metric(server, "miss") >= 0
    _stop(data, runtime, third)


def _claims_metric(server: HangarServer, result: str) -> float:
    line = f'hangar_warm_pool_claims_total{{result="{result}"}} '
    text = httpx.get(f"{server.url}/metrics", timeout=30).text
    return float(next(row for row in text.splitlines() if row.startswith(line)).split()[-1])


def test_the_count_follows_the_arrival_rate_up_and_back_down(server: HangarServer, control: Any, data: Any) -> None:
    runtime = deploy(control, "testbed", lifecycleConfiguration=QUIET)
    _template(server, runtime)
    key = _key(runtime)

    def one() -> None:
        session_id = new_session_id()
        _invoke(data, runtime, session_id)
        _stop(data, runtime, session_id)

    sizes, ready = [0], [0]
    with concurrent.futures.ThreadPoolExecutor(6) as threads:
        burst = [threads.submit(one) for _ in range(60)]
        while not all(f.done() for f in burst):
            pool = _pool(server)
            sizes.append(pool["sizes"].get(key, 0))
            ready.append(len(pool["ready"].get(key, [])))
            time.sleep(0.05)
        for f in burst:
            f.result()
    assert max(sizes) >= 2, sizes  # tens of new sessions a second: one spare refilling is not enough
    if max(ready) < 2:  # each was claimed at once: the size holds while the burst is in the window, and fills
        wait_for(lambda: len(_spares(server, runtime)) >= 2, timeout=WINDOW_S, interval=0.02)

    # the window passes without a new session: back to one, the extra spares stopped
    def back_to_one() -> list[str] | None:
        pool = _pool(server)
        ids = list(pool["ready"].get(key, []))
        return ids if pool["sizes"].get(key) == 1 and len(ids) == 1 else None

    last = wait_for(back_to_one, timeout=30, interval=0.05)
    # the idle timeout (6 s here) passes: quiet, nothing kept
    wait_for(lambda: key not in _pool(server)["sizes"] and not _spares(server, runtime), timeout=30)
    wait_for(lambda: _processes_of(last[0]) == 0, timeout=30)
    described = _pool(server)["autoSpares"]
    assert described["mode"] == "auto" and key not in described["versions"]


def test_spares_end_when_their_version_is_no_longer_served(server: HangarServer, control: Any, data: Any) -> None:
    runtime = deploy(control, "testbed", lifecycleConfiguration=BUSY)
    _template(server, runtime)
    session_id = new_session_id()
    _invoke(data, runtime, session_id)
    spare = wait_for(lambda: _spares(server, runtime), timeout=60)
    control.delete_agent_runtime(agentRuntimeId=runtime["agentRuntimeId"])
    wait_for(lambda: not _spares(server, runtime), timeout=60)
    wait_for(lambda: _processes_of(spare[0]) == 0, timeout=60)


def test_a_version_with_session_storage_keeps_no_spares(server: HangarServer, control: Any, data: Any) -> None:
    storage = [{"sessionStorage": {"mountPath": "/mnt/work"}}]
    runtime = deploy(control, "testbed", lifecycleConfiguration=BUSY, filesystemConfigurations=storage)
    _template(server, runtime)
    started = [new_session_id() for _ in range(3)]
    for session_id in started:
        assert _invoke(data, runtime, session_id) == 1
    kinds = [_session(server, s)["startKind"] for s in started]
    assert "warm" not in kinds and "fork" in kinds, kinds  # the prepared fork, with its storage attached
    time.sleep(2.0)  # two pool sweeps: still nothing started ahead
    assert _spares(server, runtime) == [] and _key(runtime) not in _pool(server)["sizes"]
    for session_id in started:
        _stop(data, runtime, session_id)


# --- the sizing alone (a clock of our own)


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def _sizer(clock: Clock, forkable: bool = True, **settings: Any) -> SpareSizer:
    return SpareSizer(Settings(spares="auto", spares_window_s=10, **settings), lambda _: forkable, clock)


def test_sizer_follows_littles_law_within_its_bounds() -> None:
    clock = Clock()
    sizer = _sizer(clock, spares_max_per_version=5)
    target = make_target(Path("/nonexistent"), "testbed", idle_timeout_s=60)
    assert sizer.size(target) == 0  # no session yet
    sizer.arrived(target)
    assert sizer.size(target) == 1  # one seen: one spare
    sizer.refilled(target, 0.5)
    for _ in range(29):  # 30 in 10 s: 3/s x 0.5 s refill x headroom 2 = 3 spares
        clock.now += 0.3
        sizer.arrived(target)
    assert sizer.size(target) == 3
    for _ in range(100):
        sizer.arrived(target)
    assert sizer.size(target) == 5  # capped per version
    clock.now += 11  # the window passed with no arrival
    assert sizer.size(target) == 1
    for _ in range(2):  # a burst found no spare twice: the mean rate hides it, the misses do not
        sizer.arrived(target)
        sizer.missed(target)
    assert sizer.size(target) == 1 + 2
    clock.now += 11
    assert sizer.size(target) == 1
    clock.now += 60  # the idle timeout too: quiet
    assert sizer.size(target) == 0 and sizer.describe()["versions"] == {}


def test_sizer_keeps_none_where_a_spare_does_not_pay() -> None:
    clock = Clock()
    target = make_target(Path("/nonexistent"), "testbed")
    for sizer, subject in (
        (_sizer(clock, forkable=False), target),  # no template, or session storage
        (_sizer(clock), make_target(Path("/nonexistent"), "testbed", environment={"HANGAR_SPARES": "off"})),
        (SpareSizer(Settings(spares="off"), lambda _: True, clock), target),
    ):
        sizer.arrived(subject)
        assert sizer.size(subject) == 0
