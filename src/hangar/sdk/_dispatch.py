"""Calling the user's handler on the right executor and turning its result into a response.

- ``async def`` handlers run on the worker loop; async generators are stepped there too.
- Plain functions (sync generators included) run in the thread pool.
- The server loop only awaits, so ``/ping`` answers however long or however blocking a handler is.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable
from contextvars import Context
from typing import Any

import anyio
from starlette.concurrency import run_in_threadpool
from starlette.responses import Response

from ._serialize import to_json_bytes
from ._streaming import EventStreamResponse, async_generator_events, sync_generator_events
from ._worker import WorkerLoop

__all__ = [
    "accepts_context_positionally",
    "call_handler",
    "is_async_callable",
    "is_async_generator_callable",
    "names_context_second",
    "render_result",
]


def _unwrap(func: Any) -> Any:
    while isinstance(func, functools.partial):
        func = func.func
    return func


def is_async_callable(func: Any) -> bool:
    """True for ``async def`` functions, partials of them and objects with an ``async def __call__``."""
    target = _unwrap(func)
    return inspect.iscoroutinefunction(target) or inspect.iscoroutinefunction(type(target).__call__)


def is_async_generator_callable(func: Any) -> bool:
    target = _unwrap(func)
    return inspect.isasyncgenfunction(target) or inspect.isasyncgenfunction(type(target).__call__)


def _parameters(func: Callable[..., Any]) -> list[inspect.Parameter]:
    try:
        return list(inspect.signature(func).parameters.values())
    except (TypeError, ValueError):  # builtins and C callables without a signature
        return []


def names_context_second(func: Callable[..., Any]) -> bool:
    """The ``@app.entrypoint`` rule: pass the context only when the second parameter is literally ``context``."""
    params = _parameters(func)
    return len(params) >= 2 and params[1].name == "context"


def accepts_context_positionally(func: Callable[..., Any]) -> bool:
    """The ``@app.handler()`` rule: pass the context whenever a second positional argument is accepted."""
    positional = (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)
    params = _parameters(func)
    if any(p.kind is inspect.Parameter.VAR_POSITIONAL for p in params):
        return True
    return sum(p.kind in positional for p in params) >= 2


async def call_handler(handler: Callable[..., Any], args: tuple[Any, ...], context: Context, worker: WorkerLoop) -> Any:
    """The handler's result; generators are returned unstarted, to be streamed by ``render_result``."""
    if is_async_generator_callable(handler):
        return handler(*args)
    if is_async_callable(handler):
        return await worker.run(handler(*args), context)
    return await run_in_threadpool(context.run, handler, *args)


async def render_result(result: Any, context: Context, worker: WorkerLoop) -> Response:
    if inspect.isgenerator(result):
        return EventStreamResponse(sync_generator_events(result, context))
    if inspect.isasyncgen(result):
        return EventStreamResponse(async_generator_events(result, context, worker))
    if isinstance(result, Response):
        return result  # the handler chose status and headers itself
    if isinstance(result, bytes | bytearray | memoryview):
        return Response(bytes(result), media_type="application/octet-stream")
    body = await anyio.to_thread.run_sync(to_json_bytes, result)
    return Response(body, media_type="application/json")
