"""Streaming responses: a handler's generator becomes Server-Sent Events, one ``data:`` frame per item.

Sync generators advance in the thread pool and async generators on the worker loop, so a slow producer never
blocks the server loop. When the client goes away the generator is closed at once (its ``finally`` blocks run),
so an agent stops spending tokens on an answer nobody reads. An exception inside the generator becomes one last
error event; the status line has long been sent by then.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncGenerator, Generator
from contextvars import Context
from typing import Any

import anyio
from starlette.responses import Response
from starlette.types import Receive, Scope, Send

from ._serialize import error_event, sse_event
from ._worker import WorkerLoop

__all__ = ["EventStreamResponse", "async_generator_events", "sync_generator_events"]


class EventStreamResponse(Response):
    """``text/event-stream`` response that stops (and closes its source) as soon as the client disconnects."""

    media_type = "text/event-stream"

    def __init__(self, events: AsyncGenerator[bytes, None], status_code: int = 200) -> None:
        self.events = events
        self.status_code = status_code
        self.background = None
        self.init_headers()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            async with anyio.create_task_group() as group:
                group.start_soon(self._watch_disconnect, receive, group.cancel_scope)
                await send({"type": "http.response.start", "status": self.status_code, "headers": self.raw_headers})
                async for chunk in self.events:
                    await send({"type": "http.response.body", "body": chunk, "more_body": True})
                await send({"type": "http.response.body", "body": b"", "more_body": False})
                group.cancel_scope.cancel()
        finally:
            with anyio.CancelScope(shield=True):
                await self.events.aclose()

    @staticmethod
    async def _watch_disconnect(receive: Receive, scope: anyio.CancelScope) -> None:
        while (await receive())["type"] != "http.disconnect":
            pass
        scope.cancel()


async def sync_generator_events(generator: Generator[Any, Any, Any], context: Context) -> AsyncGenerator[bytes, None]:
    """SSE frames from a sync generator, each step run in the thread pool inside the request's context."""

    def step() -> bytes | None:
        try:
            return sse_event(next(generator))
        except StopIteration:
            return None

    def close() -> None:
        with contextlib.suppress(Exception):
            generator.close()

    try:
        while True:
            try:
                frame = await anyio.to_thread.run_sync(context.run, step)
            except Exception as exc:
                yield error_event(exc)
                return
            if frame is None:
                return
            yield frame
    finally:
        # Not abandoned on cancel: the step in flight has returned, so the generator is idle and can be closed.
        with anyio.CancelScope(shield=True):
            await anyio.to_thread.run_sync(context.run, close)


async def async_generator_events(
    generator: AsyncGenerator[Any, Any], context: Context, worker: WorkerLoop
) -> AsyncGenerator[bytes, None]:
    """SSE frames from an async generator, each step run on the worker loop inside the request's context."""

    async def step() -> bytes | None:
        try:
            return sse_event(await generator.__anext__())
        except StopAsyncIteration:
            return None

    async def close() -> None:
        with contextlib.suppress(Exception):
            await generator.aclose()

    stepping = False
    finished = False
    try:
        while True:
            stepping = True
            try:
                frame = await worker.run(step(), context, after_cancel=close)
            except Exception as exc:
                finished = True
                yield error_event(exc)
                return
            stepping = False
            if frame is None:
                finished = True
                return
            yield frame
    finally:
        if not finished and not stepping:  # a cancelled step closes the generator itself (``after_cancel``)
            worker.spawn(close(), context.copy())
