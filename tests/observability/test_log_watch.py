"""The capture reads a followed file when it is written to, not on every pass: real files, a real inotify watch,
a real log store. Quiet files cost no pass; a partial line and a backlog larger than one read still get their next
pass without a new write; a file that cannot be watched (not there yet, or replaced) is polled by its path."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

from hangar.observability.log_capture import MAX_READ, LogCapture
from hangar.observability.logs import LogStore, group_name

RUNTIME = "watched_abc-0123456789"
INTERVAL_S = 0.01


def messages(store: LogStore, session: str) -> list[str]:
    for stream in store.streams(group_name(RUNTIME, "DEFAULT")) or []:
        if stream.name.endswith(session):
            return [event.message for event in stream.events()]
    return []


async def until(check: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + 20
    while not check():
        assert time.monotonic() < deadline, f"never happened: {what}"
        await asyncio.sleep(0.01)


def run(tmp_path: Path, body: Callable[[LogCapture, LogStore], Awaitable[None]]) -> None:
    store = LogStore(tmp_path / "logs", 16 * 1024 * 1024, 10**9, 3600)

    async def main() -> None:
        capture = LogCapture(store, interval=INTERVAL_S)
        try:
            await body(capture, store)
        finally:
            await capture.stop()

    asyncio.run(main())


def append(path: Path, data: bytes) -> None:
    with open(path, "ab") as out:
        out.write(data)


def test_only_written_files_are_read_and_a_quiet_capture_makes_no_pass(tmp_path: Path) -> None:
    first, second = tmp_path / "a.log", tmp_path / "b.log"
    first.write_bytes(b"started\n")  # written before the capture began: read from the beginning
    second.write_bytes(b"")

    async def body(capture: LogCapture, store: LogStore) -> None:
        capture.begin("a", first, RUNTIME, "DEFAULT", "a" * 40)
        capture.begin("b", second, RUNTIME, "DEFAULT", "b" * 40)
        assert capture.watched() == 2
        await until(lambda: messages(store, "a" * 40) == ["started"], "the first line")
        await until(lambda: not capture._due, "nothing left to read")
        passes = capture.passes
        await asyncio.sleep(30 * INTERVAL_S)
        assert capture.passes == passes  # nothing written: nothing looked at
        append(second, b"hello\n")
        await until(lambda: messages(store, "b" * 40) == ["hello"], "the written line")
        assert messages(store, "a" * 40) == ["started"]

    run(tmp_path, body)


def test_a_partial_line_and_a_backlog_are_read_without_another_write(tmp_path: Path) -> None:
    partial, flood = tmp_path / "partial.log", tmp_path / "flood.log"
    partial.write_bytes(b"")
    flood.write_bytes(b"")
    # 128-byte lines: every read of MAX_READ ends on a line's end, so no partial line asks for the next pass
    big = b"".join(b"line %07d " % index + b"x" * 114 + b"\n" for index in range(3 * MAX_READ // 128))

    async def body(capture: LogCapture, store: LogStore) -> None:
        capture.begin("p", partial, RUNTIME, "DEFAULT", "p" * 40)
        capture.begin("f", flood, RUNTIME, "DEFAULT", "f" * 40)
        append(partial, b"no newline yet")
        await until(lambda: messages(store, "p" * 40) == ["no newline yet"], "the partial line, once it stopped")
        append(flood, big)  # three reads' worth in one write: the last two come on passes no write asked for
        last = big.rstrip(b"\n").rsplit(b"\n", 1)[1].decode()
        await until(lambda: messages(store, "f" * 40)[-1:] == [last], "the end of the backlog")
        assert len(messages(store, "f" * 40)) == 3 * MAX_READ // 128

    run(tmp_path, body)


def test_files_that_cannot_be_watched_are_polled(tmp_path: Path) -> None:
    later, replaced = tmp_path / "later.log", tmp_path / "replaced.log"
    replaced.write_bytes(b"before\n")

    async def body(capture: LogCapture, store: LogStore) -> None:
        capture.begin("later", later, RUNTIME, "DEFAULT", "l" * 40)  # not there yet: polled
        capture.begin("replaced", replaced, RUNTIME, "DEFAULT", "r" * 40)
        assert capture.watched() == 1
        later.write_bytes(b"made later\n")
        await until(lambda: messages(store, "l" * 40) == ["made later"], "the file made after the start")
        await until(lambda: messages(store, "r" * 40) == ["before"], "the first line")
        replaced.unlink()
        replaced.write_bytes(b"after\n")  # a new file at the path, never written through the watched one
        await until(lambda: messages(store, "r" * 40) == ["before", "after"], "the replaced file's line")
        assert capture.watched() == 0

    run(tmp_path, body)
