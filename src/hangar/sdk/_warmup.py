"""Warm-up: pay the first request's one-time costs while the server starts, not on the first request.

A fresh agent's first ``/invocations`` used to take ten times longer than the next (16 to 20 ms against 1.5 to 2 ms):
it imported anyio's asyncio backend and started the thread-pool worker that runs sync handlers. The ASGI
lifespan startup runs before uvicorn binds its socket, so doing both there means ``/ping`` answers only once the
agent is really warm, and a warm-pool spare claimed by a session answers its first request at full speed.

Nothing here starts a thread, a loop or a socket at import or in ``AgentApp.__init__``: an app must stay safe to
``fork()`` until it serves (Hangar's warm templates fork it). Only the import, the bulk of the cost and harmless
before a fork, happens with this module's: a template then pays it once for all its forks.
"""

from __future__ import annotations

import contextlib
import contextvars
import importlib
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

from starlette.concurrency import run_in_threadpool
from starlette.types import Lifespan

from ._dispatch import is_async_callable, is_async_generator_callable
from ._worker import WorkerLoop

__all__ = ["warm_up", "warming_lifespan"]

with contextlib.suppress(ImportError):  # anyio's own lazy import on the first thread-pool call; private, so optional
    importlib.import_module("anyio._backends._asyncio")


def _noop() -> None:
    return None


async def _async_noop() -> None:
    return None


async def warm_up(worker: WorkerLoop, handler: Callable[..., Any] | None) -> None:
    """Send one no-op down each path a call of ``handler`` takes: the thread pool always, the worker loop if used.

    Every handler kind needs the thread pool (sync handlers run there, results are encoded there); the worker
    loop, a thread that never exits, is started only for ``async`` handlers and async generators, which run on it.
    No garbage collection here: a full one costs 10 ms at start for at most a millisecond saved on one early request.
    """
    await run_in_threadpool(_noop)
    if handler is not None and (is_async_callable(handler) or is_async_generator_callable(handler)):
        await worker.run(_async_noop(), contextvars.copy_context())


def warming_lifespan(
    inner: Lifespan[Any], warm: Callable[[], Awaitable[None]], logger: logging.Logger
) -> Callable[[Any], contextlib.AbstractAsyncContextManager[Any]]:
    """``inner`` (the user's lifespan, or Starlette's default) followed by the warm-up, its state passed on.

    The warm-up comes after the user's startup so that a slow one (loading a model) cannot outlast anyio's idle
    thread timeout before the first request. A failed warm-up is logged and the agent serves anyway: the first
    request then pays, as it would without it.
    """

    @contextlib.asynccontextmanager
    async def lifespan(app: Any) -> AsyncIterator[Any]:
        async with inner(app) as state:
            try:
                await warm()
            except Exception:
                logger.warning("Warm-up failed; the first request will pay its cost", exc_info=True)
            yield state

    return lifespan
