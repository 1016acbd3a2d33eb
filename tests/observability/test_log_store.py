"""The session log store and its capture on real files: rotation within a session's budget, retention by age and by
runtime size, a torn line after a crash, a reopened stream continuing its sequence, and the capture's line rules
(split, partial, skipped backlog). No server: these are the bounds the e2e test (test_logs.py) relies on."""

from __future__ import annotations

import os
import time
from pathlib import Path

from hangar.observability.log_capture import MAX_EVENT, LogCapture, _Source
from hangar.observability.logs import LogStore, group_name

RUNTIME = "logger_abc-0123456789"
STARTED = 1_765_000_000.0  # 2025-12-06 UTC


def store(
    root: Path, session_bytes: int = 64 * 1024, runtime_bytes: int = 10**9, retention_s: float = 3600
) -> LogStore:
    return LogStore(root, session_bytes, runtime_bytes, retention_s)


def test_a_stream_rotates_within_its_budget_oldest_first(tmp_path: Path) -> None:
    logs = store(tmp_path / "logs")
    writer = logs.open_writer(RUNTIME, "DEFAULT", "s" * 40, STARTED)
    for index in range(2000):
        writer.append([(1000 + index, f"line {index:05d} " + "x" * 100)])
    stream = (logs.streams(group_name(RUNTIME, "DEFAULT")) or [])[0]
    assert stream.name == "2025/12/06/[runtime-logs]" + "s" * 40
    assert stream.stored_bytes() <= 64 * 1024
    events = list(stream.events())
    assert events[-1].message.startswith("line 01999") and events[0].seq > 0
    assert [e.seq for e in events] == list(range(events[0].seq, 2000))
    first, last = stream.bounds()
    assert first == events[0] and last == events[-1]
    assert (tmp_path / "logs").stat().st_mode & 0o777 == 0o700  # sessions' output is for the operator only


def test_a_reopened_stream_continues_and_skips_a_torn_line(tmp_path: Path) -> None:
    logs = store(tmp_path)
    writer = logs.open_writer(RUNTIME, "DEFAULT", "t" * 40, STARTED)
    writer.append([(1, "one"), (2, "two")])
    with open(writer.stream.segments()[-1], "ab") as segment:
        segment.write(b'[3, 2, "tor')  # a crash mid-write
    again = store(tmp_path).open_writer(RUNTIME, "DEFAULT", "t" * 40, STARTED)
    again.append([(4, "three")])
    events = list(again.stream.events())
    assert [(e.seq, e.message) for e in events if e.message != "tor"] == [(0, "one"), (1, "two"), (2, "three")]


def test_retention_by_age_and_by_runtime_size_spares_live_streams(tmp_path: Path) -> None:
    logs = store(tmp_path, runtime_bytes=3000, retention_s=100)
    old = logs.open_writer(RUNTIME, "DEFAULT", "a" * 40, STARTED)
    old.append([(1, "x" * 1000)])
    logs.close_writer(old)
    middle = logs.open_writer(RUNTIME, "prod", "b" * 40, STARTED)
    middle.append([(1, "y" * 1000)])
    logs.close_writer(middle)
    live = logs.open_writer(RUNTIME, "DEFAULT", "c" * 40, STARTED)
    live.append([(1, "z" * 1000)])
    now = time.time()
    ancient = now - 1000
    for writer in (old, live):
        for path in writer.stream.segments():
            os.utime(path, (ancient, ancient))
    assert logs.sweep(now) == 1  # the old closed stream; the live one is being written
    names = [s.name for s in logs.streams(group_name(RUNTIME, "DEFAULT")) or []]
    assert names == [live.stream.name]
    newer = logs.open_writer(RUNTIME, "DEFAULT", "d" * 40, STARTED)
    newer.append([(1, "w" * 900)])  # the runtime now holds more than 3000 bytes: the oldest closed stream goes
    logs.close_writer(newer)
    assert logs.sweep(now) == 1
    assert logs.streams(group_name(RUNTIME, "prod")) is None  # its group went with its last stream
    assert logs.group("/aws/bedrock-agentcore/runtimes/nothing-DEFAULT") is None


def test_capture_splits_lines_flushes_partials_and_skips_a_huge_backlog(tmp_path: Path) -> None:
    logs = store(tmp_path, session_bytes=64 * 1024)
    capture = LogCapture(logs)
    output = tmp_path / "agent.log"
    writer = logs.open_writer(RUNTIME, "DEFAULT", "e" * 40, STARTED)
    source = _Source(output, writer)
    output.write_bytes(b"first\n\nsecond\r\n" + b"L" * (MAX_EVENT + 10) + b"\npartial")
    capture._read(source, final=False)
    assert [e.message for e in writer.stream.events()] == ["first", "second", "L" * MAX_EVENT, "L" * 10]
    capture._read(source, final=False)  # the partial line has not grown for one pass
    capture._read(source, final=False)
    assert [e.message for e in writer.stream.events()][-1] == "partial"
    with open(output, "ab") as out:
        out.write(b"z" * (200 * 1024) + b"\nthe end")
    capture._read(source, final=True)
    messages = [e.message for e in writer.stream.events()]
    assert messages[-1] == "the end"
    assert any(m.startswith("[hangar: ") and "skipped" in m for m in messages)
    assert writer.stream.stored_bytes() <= 64 * 1024


def test_capture_never_follows_a_link_or_blocks_on_a_fifo(tmp_path: Path) -> None:
    logs = store(tmp_path / "logs")
    capture = LogCapture(logs)
    secret = tmp_path / "secret"
    secret.write_text("host secret\n")
    link = tmp_path / "agent.log"
    link.symlink_to(secret)
    writer = logs.open_writer(RUNTIME, "DEFAULT", "f" * 40, STARTED)
    capture._read(_Source(link, writer), final=True)
    fifo = tmp_path / "fifo.log"
    os.mkfifo(fifo)
    capture._read(_Source(fifo, writer), final=True)  # returns at once: no writer will ever open it
    assert list(writer.stream.events()) == []
