"""``AgentApp``: the ASGI app an agent runs inside its sandbox, speaking the AgentCore HTTP contract.

Routes: ``POST /invocations`` (JSON in; JSON or Server-Sent Events out), ``GET /ping`` (health, always 200) and
the ``/ws`` WebSocket. It is a Starlette app, so middleware, lifespan and mounting work as usual.
"""

from __future__ import annotations

import contextlib
import contextvars
import functools
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, TypeVar

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route, WebSocketRoute
from starlette.types import Lifespan
from starlette.websockets import WebSocket, WebSocketDisconnect

from ._context import RequestContext, bind_request_context
from ._debug import debug_action_response
from ._dispatch import (
    accepts_context_positionally,
    call_handler,
    is_async_callable,
    names_context_second,
    render_result,
)
from ._logging import app_logger
from ._payload import PayloadError, read_payload
from ._ping import PingStatus, PingTracker
from ._serialize import CompactJSONResponse
from ._server import serve
from ._tasks import AsyncTaskRegistry
from ._tracing import handler_span
from ._warmup import warm_up, warming_lifespan
from ._worker import WorkerLoop

__all__ = ["AgentApp", "BedrockAgentCoreApp"]

F = TypeVar("F", bound=Callable[..., Any])
ENTRYPOINT = "main"


class AgentApp(Starlette):
    """An agent: register a handler with ``@app.entrypoint`` (or ``@app.handler()``) and call ``app.run()``."""

    def __init__(
        self,
        debug: bool = False,
        lifespan: Lifespan[Any] | None = None,
        middleware: Sequence[Middleware] | None = None,
    ) -> None:
        self.handlers: dict[str, Callable[..., Any]] = {}
        self._registered: tuple[Callable[..., Any], bool] | None = None  # the decorated handler and its context rule
        self._websocket_handler: Callable[[WebSocket, RequestContext], Awaitable[None]] | None = None
        self.logger = app_logger(debug)
        self._tasks = AsyncTaskRegistry(self.logger)
        self._ping = PingTracker(is_busy=lambda: bool(self._tasks), logger=self.logger)
        self._worker = WorkerLoop()
        routes = [
            Route("/invocations", self._handle_invocation, methods=["POST"]),
            Route("/ping", self._handle_ping, methods=["GET"]),
            WebSocketRoute("/ws", self._handle_websocket),
        ]
        super().__init__(routes=routes, lifespan=lifespan, middleware=middleware)
        # Only the ASGI startup warms up (no thread before the server runs: the app stays safe to fork).
        self.router.lifespan_context = warming_lifespan(self.router.lifespan_context, self._warm_up, self.logger)
        self.debug = debug  # after Starlette's __init__, which would reset it; enables the debug actions too

    # Registration -------------------------------------------------------------------------------------------

    def entrypoint(self, func: F) -> F:
        """Register the invocation handler: ``def f(payload)`` or ``def f(payload, context)``.

        The context is passed only when the second parameter is named ``context`` (the reference SDK's rule).
        """
        self._register(func, names_context_second(func))
        return func

    def handler(self) -> Callable[[F], F]:
        """Register the invocation handler, decorator-factory style: ``@app.handler()``.

        The context is passed whenever the function takes a second positional argument, whatever its name.
        """

        def register(func: F) -> F:
            self._register(func, accepts_context_positionally(func))
            return func

        return register

    def _register(self, func: Callable[..., Any], passes_context: bool) -> None:
        self.handlers[ENTRYPOINT] = func
        self._registered = (func, passes_context)
        with contextlib.suppress(AttributeError, TypeError):  # builtins and some callables refuse attributes
            func.run = lambda port=8080, host=None: self.run(port, host)  # type: ignore[attr-defined]  # as the SDK does

    def ping(self, func: F) -> F:
        """Register a function returning the health status (a ``PingStatus`` or its string value)."""
        self._ping.custom = func
        return func

    def websocket(self, func: F) -> F:
        """Register the ``/ws`` handler: ``async def f(websocket, context)``; it must accept the socket itself."""
        self._websocket_handler = func
        return func

    def async_task(self, func: F) -> F:
        """Track an ``async def`` function as background work: ``/ping`` says HealthyBusy while any call runs."""
        if not is_async_callable(func):
            raise ValueError("@async_task can only be applied to async functions")
        name = getattr(func, "__name__", "async_task")

        @functools.wraps(func)
        async def tracked(*args: Any, **kwargs: Any) -> Any:
            task_id = self.add_async_task(name)
            started = time.monotonic()
            try:
                return await func(*args, **kwargs)
            except Exception:
                self.logger.exception("Async task failed: %s (%.3fs)", name, time.monotonic() - started)
                raise
            finally:
                self.complete_async_task(task_id)

        return tracked  # type: ignore[return-value]  # same call signature as func, which F stands for

    # Health and background work -----------------------------------------------------------------------------

    def get_current_ping_status(self) -> PingStatus:
        """Forced status, else the custom ``@app.ping`` function, else HealthyBusy while async tasks run."""
        return self._ping.current()

    def force_ping_status(self, status: PingStatus) -> None:
        self._ping.forced = PingStatus(status)

    def clear_forced_ping_status(self) -> None:
        self._ping.forced = None

    def ping_body(self) -> dict[str, Any]:
        """The ``/ping`` JSON: status and the unix second at which it last changed."""
        status = self.get_current_ping_status()
        return {"status": status.value, "time_of_last_update": self._ping.last_change}

    def get_async_task_info(self) -> dict[str, Any]:
        return self._tasks.info()

    def add_async_task(self, name: str, metadata: dict[str, Any] | None = None) -> int:
        """Mark background work as started; returns the id that ``complete_async_task`` takes."""
        return self._tasks.add(name, metadata)

    def complete_async_task(self, task_id: int) -> bool:
        """Mark background work as finished; False when the id is unknown (or already completed)."""
        return self._tasks.complete(task_id)

    # Serving ------------------------------------------------------------------------------------------------

    def run(self, port: int = 8080, host: str | None = None, **uvicorn_options: Any) -> None:
        """Serve with uvicorn; ``host=None`` means 0.0.0.0 in a container or Hangar sandbox, else 127.0.0.1."""
        serve(self, port=port, host=host, debug=self.debug, **uvicorn_options)

    async def _warm_up(self) -> None:
        await warm_up(self._worker, self.handlers.get(ENTRYPOINT))

    async def _handle_invocation(self, request: Request) -> Response:
        context = bind_request_context(request, self)
        try:
            payload = await read_payload(request)
        except PayloadError as exc:
            self.logger.warning("Rejected invocation body: %s", exc)
            return CompactJSONResponse(exc.body, status_code=400)
        try:
            if self.debug and (answer := debug_action_response(self, payload, self.logger)) is not None:
                return answer
            handler = self.handlers.get(ENTRYPOINT)
            if handler is None:
                self.logger.error("No entrypoint defined")
                return CompactJSONResponse({"error": "No entrypoint defined"}, status_code=500)
            args = (payload, context) if self._passes_context(handler) else (payload,)
            with handler_span(request.headers, context.session_id):  # the handler's copy of the context holds it
                snapshot = contextvars.copy_context()
                result = await call_handler(handler, args, snapshot, self._worker)
                return await render_result(result, snapshot, self._worker)
        except HTTPException as exc:
            self.logger.warning("Handler raised HTTP %d: %s", exc.status_code, exc.detail)
            return CompactJSONResponse({"error": exc.detail}, status_code=exc.status_code)
        except Exception as exc:
            self.logger.exception("Invocation failed")
            return CompactJSONResponse({"error": str(exc)}, status_code=500)

    def _passes_context(self, handler: Callable[..., Any]) -> bool:
        """The rule of the decorator that registered ``handler``; the entrypoint rule if set through ``handlers``."""
        if self._registered is not None and self._registered[0] is handler:
            return self._registered[1]
        return names_context_second(handler)

    async def _handle_ping(self, request: Request) -> Response:
        return CompactJSONResponse(self.ping_body())  # a failing @app.ping function is already absorbed

    async def _handle_websocket(self, websocket: WebSocket) -> None:
        context = bind_request_context(websocket, self)
        handler = self._websocket_handler
        if handler is None:
            self.logger.error("No WebSocket handler defined")
            await websocket.close(code=1011)
            return
        try:
            await handler(websocket, context)
        except WebSocketDisconnect:
            self.logger.debug("WebSocket client disconnected")
        except Exception:
            self.logger.exception("WebSocket handler failed")
            with contextlib.suppress(Exception):
                await websocket.close(code=1011)


BedrockAgentCoreApp = AgentApp
