"""The worker event loop: where ``async`` handlers run, so that the server's own loop always answers ``/ping``.

An agent's ``async def`` handler may block (a synchronous SDK call, a CPU-heavy step). Run on the server's loop,
that would freeze health checks and the runtime would declare the session dead. So async handlers run on one
dedicated loop in a daemon thread, shared by every request of the app, and the server loop only awaits the result.
"""

from __future__ import annotations

import asyncio
import contextlib
import sys
import threading
from collections.abc import Callable, Coroutine
from contextvars import Context
from typing import Any, TypeVar

__all__ = ["WorkerLoop"]

T = TypeVar("T")

_START_TIMEOUT = 10.0


class WorkerLoop:
    """A lazily started event loop on its own daemon thread."""

    def __init__(self, name: str = "hangar-worker-loop") -> None:
        self._name = name
        self._loop: asyncio.AbstractEventLoop | None = None
        self._lock = threading.Lock()
        self._background: set[asyncio.Task[Any]] = set()  # the loop keeps only weak references to tasks

    def loop(self) -> asyncio.AbstractEventLoop:
        with self._lock:
            if self._loop is None or self._loop.is_closed():
                self._loop = self._start()
            return self._loop

    def _start(self) -> asyncio.AbstractEventLoop:
        ready = threading.Event()
        holder: list[asyncio.AbstractEventLoop] = []

        def serve() -> None:
            # Created in its own thread: a loop inherited from the parent thread's state would refuse to run.
            loop = asyncio.new_event_loop()
            asyncio.set_event_loop(loop)
            holder.append(loop)
            loop.call_soon(ready.set)
            loop.run_forever()

        threading.Thread(target=serve, name=self._name, daemon=True).start()
        if not ready.wait(_START_TIMEOUT):
            raise RuntimeError(f"{self._name} did not start")
        return holder[0]

    async def run(
        self,
        coro: Coroutine[Any, Any, T],
        context: Context,
        after_cancel: Callable[[], Coroutine[Any, Any, Any]] | None = None,
    ) -> T:
        """Run ``coro`` on the worker loop inside ``context`` and await its result from the calling loop.

        Cancelling the caller cancels the worker task; ``after_cancel`` then runs on the worker loop once that
        task has really finished (the place to close a generator it was driving).
        """
        loop = self.loop()
        caller = asyncio.get_running_loop()
        outcome: asyncio.Future[T] = caller.create_future()
        started: list[asyncio.Task[T]] = []

        def deliver(task: asyncio.Task[T]) -> None:
            if outcome.done():
                return
            if task.cancelled():
                outcome.cancel()
            elif (exc := task.exception()) is not None:
                outcome.set_exception(RuntimeError(repr(exc)) if isinstance(exc, StopIteration) else exc)
            else:
                outcome.set_result(task.result())

        def relay(task: asyncio.Task[T]) -> None:
            with contextlib.suppress(RuntimeError):  # the server loop is already gone at shutdown
                caller.call_soon_threadsafe(deliver, task)

        def start() -> None:
            task = _create_task(loop, coro, context)
            started.append(task)
            task.add_done_callback(relay)

        def cancel() -> None:
            task = started[0]
            task.cancel()
            if after_cancel is not None:
                task.add_done_callback(lambda _: self.spawn(after_cancel(), context.copy()))

        loop.call_soon_threadsafe(start)
        try:
            return await outcome
        except asyncio.CancelledError:
            loop.call_soon_threadsafe(cancel)  # queued after ``start``, so the task exists by then
            raise

    def spawn(self, coro: Coroutine[Any, Any, Any], context: Context) -> None:
        """Start ``coro`` on the worker loop without waiting for it (thread-safe)."""
        loop = self.loop()

        def launch() -> None:
            task = _create_task(loop, coro, context)
            self._background.add(task)
            task.add_done_callback(self._background.discard)

        loop.call_soon_threadsafe(launch)


def _create_task(loop: asyncio.AbstractEventLoop, coro: Coroutine[Any, Any, T], context: Context) -> asyncio.Task[T]:
    """A task running in ``context`` itself (3.11+), or in a copy of it on Python 3.10 (agents may run 3.10)."""
    if sys.version_info >= (3, 11):  # noqa: UP036 - the SDK runs in agents' interpreters, 3.10 included
        return loop.create_task(coro, context=context)
    return context.run(loop.create_task, coro)  # type: ignore[unreachable]  # Python 3.10 agents; mypy checks 3.11
