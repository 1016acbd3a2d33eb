"""A version whose sessions find no spare refills at once, several forked spares at a time (``sessions/pool.py``:
*short*), instead of one at a time after a quiet moment; and those spares are still one per session, never shared.

A real ``hangar serve`` (namespace sandboxes, ``spares=auto``), bursts of new sessions through boto3, the pool seen
through the operator API (``warmPool.starting``: spares being started now)."""

from __future__ import annotations

import concurrent.futures
import json
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest

from tests.dataplane.support import deploy, new_session_id, operator, seeded_server, wait_for
from tests.support.server import HangarServer

BUSY = {"idleRuntimeSessionTimeout": 1200, "maxLifetime": 28800}
BURST = 6


@pytest.fixture(scope="module")
def server() -> Iterator[HangarServer]:
    env = {"HANGAR_SPARES": "auto", "HANGAR_SPARES_WINDOW_S": "30"}
    with seeded_server("hangar-spares-short-", ["testbed"], env=env) as hangar:
        if not operator(hangar)["templates"]["enabled"]:
            pytest.skip(f"forked spares need the namespace backend, this host has {operator(hangar)['backend']}")
        yield hangar


def _key(runtime: dict[str, Any]) -> str:
    return f"{runtime['agentRuntimeId']}/{runtime['agentRuntimeVersion']}"


def _open(data: Any, runtime: dict[str, Any], session_id: str) -> int:
    """A new session's first call: its in-memory count is 1 in a sandbox of its own."""
    response = data.invoke_agent_runtime(
        agentRuntimeArn=runtime["agentRuntimeArn"], runtimeSessionId=session_id, payload=json.dumps({"action": "count"})
    )
    return int(json.loads(response["response"].read())["count"])


def test_a_short_version_starts_several_spares_at_once(server: HangarServer, control: Any, data: Any) -> None:
    runtime = deploy(control, "testbed", lifecycleConfiguration=BUSY)
    key = _key(runtime)

    def template_alive() -> bool:
        state = operator(server)["templates"]["versions"].get(key) or {}
        return bool((state.get("template") or {}).get("alive"))

    wait_for(template_alive, timeout=180)
    most = 0
    done = threading.Event()

    def watch() -> None:  # the pool's starts in flight, as often as the operator API answers
        nonlocal most
        while not done.wait(0.002):
            most = max(most, int(operator(server)["warmPool"]["starting"]))

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    sessions: list[str] = []
    sandboxes: set[str] = set()
    try:
        deadline = time.monotonic() + 180
        while most < 2:  # bursts of new sessions until the pool was seen starting two spares at once
            assert time.monotonic() < deadline, f"the pool never started two spares at once (most {most})"
            burst = [new_session_id() for _ in range(BURST)]
            with concurrent.futures.ThreadPoolExecutor(BURST) as pool:
                assert list(pool.map(lambda session_id: _open(data, runtime, session_id), burst)) == [1] * BURST
            sessions += burst
            listed = {s["runtimeSessionId"]: s for s in operator(server)["sessions"]}
            for session_id in burst:
                sandboxes.add(listed[session_id]["sandboxId"])
            assert len(sandboxes) == len(sessions)  # a spare serves one session, never two
            for session_id in burst:
                data.stop_runtime_session(agentRuntimeArn=runtime["agentRuntimeArn"], runtimeSessionId=session_id)
    finally:
        done.set()
        watcher.join(timeout=30)
    pool_state = operator(server)["warmPool"]
    assert pool_state["claims"]["miss"] >= 1 and pool_state["sizes"][key] >= 2
    ready = pool_state["ready"].get(key, [])
    assert not set(ready) & sandboxes  # a claimed sandbox is never ready again
