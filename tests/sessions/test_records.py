"""Session records on a real file: what a process saved is what the next one reports (its live sessions as
Terminated, "Hangar restarted"), with records encoded once per start and end rather than on every save."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

from hangar.sessions.records import KEEP_TERMINATED, SessionRecords


def record(session_id: str, state: str = "Idle") -> dict[str, object]:
    return {"runtimeSessionId": session_id, "state": state, "endedAt": None, "endReason": None, "inflight": 0}


def test_saved_records_are_what_the_next_process_reports(tmp_path: Path) -> None:
    path = tmp_path / "sessions" / "records.json"
    records = SessionRecords(path)
    first, second, third = object(), object(), object()
    records.started(first, record("one"))
    records.started(second, record("two"))
    records.started(third, record("three"))
    records.remember_ended({**record("two", "Terminated"), "endReason": "stopped"}, second)
    asyncio.run(records.save())
    document = json.loads(path.read_text())
    assert [r["runtimeSessionId"] for r in document["live"]] == ["one", "three"]
    assert [r["endReason"] for r in document["terminated"]] == ["stopped"]

    after = SessionRecords(path)
    assert after.load_previous() == 2
    reported = {r["runtimeSessionId"]: r for r in after.terminated}
    assert reported["one"]["state"] == "Terminated" and reported["one"]["endReason"] == "Hangar restarted"
    assert reported["two"]["endReason"] == "stopped"
    asyncio.run(after.save())  # the new process has no live sessions: the old ones stay reported, ended
    again = json.loads(path.read_text())
    assert again["live"] == [] and len(again["terminated"]) == 3


def test_only_the_newest_ended_records_are_kept(tmp_path: Path) -> None:
    records = SessionRecords(tmp_path / "records.json")
    for index in range(KEEP_TERMINATED + 5):
        key = object()
        records.started(key, record(f"s{index}"))
        records.remember_ended(record(f"s{index}", "Terminated"), key)
    asyncio.run(records.save())
    document = json.loads((tmp_path / "records.json").read_text())
    assert document["live"] == []
    assert [r["runtimeSessionId"] for r in document["terminated"]] == [f"s{i}" for i in range(5, KEEP_TERMINATED + 5)]
