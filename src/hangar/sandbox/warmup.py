"""What a forked agent's first request would pay on its own, paid once in its warm template instead.

A fork of a warm template starts with everything the agent imported, but an unmodified ``bedrock-agentcore`` app
(and any Starlette app under uvicorn) still imports anyio's asyncio backend, its socket and memory-stream modules and
uvicorn's event-loop module on its first ``/ping`` or ``/invocations``, and builds Starlette's middleware stack on
its first ASGI call. Measured in a fork, that made the real SDK's first ``/ping`` several times slower than
``hangar.sdk``'s, which warms itself. Every fork repeats that work and writes its own copy of the pages it touches;
done here, before the template freezes its heap, it is done once and shared by copy-on-write.

Rules, because this runs in the template of an agent that is then forked: nothing here runs the agent's handler or
its middleware, starts a thread, opens a socket or creates an event loop (the zygote checks after this that it
still has one thread and no sockets). Only modules of packages the agent already imported are imported, so an agent
that does not use anyio does not get it. Anything that fails is skipped: the fork then pays on its first request,
as it did before. Loaded by path by ``zygote.py`` (standard library only, like it), one call: ``warm(config)``.
"""

from __future__ import annotations

import contextlib
import importlib
import sys
from typing import Any

# Imported lazily by anyio (its backend, on the first thread-pool call or task group of a loop) and by Starlette's
# request path: what ``python -X importtime`` shows a forked real-SDK agent importing after it started serving.
FIRST_USE_MODULES = {
    "anyio": (
        "anyio._backends._asyncio",
        "anyio.lowlevel",
        "anyio.to_thread",
        "anyio.from_thread",
        "anyio._core._sockets",
        "anyio._core._streams",
        "anyio._core._tasks",
        "anyio._core._synchronization",
        "anyio.streams.memory",
        "anyio.streams.stapled",
        "anyio.streams.tls",
    ),
    "uvicorn": ("uvicorn.loops.auto", "uvicorn.loops.asyncio", "uvicorn.lifespan.on"),
    "starlette": ("starlette.concurrency",),
}
# Middleware stacks built ahead only when every class in them is one of these packages' (their constructors only
# store arguments); an agent's own middleware is built by Starlette on the first request, as before.
KNOWN_MIDDLEWARE = ("starlette.", "fastapi.", "bedrock_agentcore.", "hangar.sdk.")
MAX_WRAPPERS = 16


def warm(config: Any) -> list[str]:
    """Pay the first-use costs of the app uvicorn ``config`` loaded; returns what was done (for the template log)."""
    done = [f"imported {name}" for name in import_first_use()]
    with contextlib.suppress(Exception):
        config.get_loop_factory()  # uvicorn >= 0.36: imports the loop module (and uvloop) without creating a loop
    with contextlib.suppress(Exception):
        done += build_middleware_stacks(getattr(config, "loaded_app", None))
    return done


def import_first_use() -> list[str]:
    """Import the first-use modules of every package in ``FIRST_USE_MODULES`` that the agent itself imported."""
    imported = []
    for package, modules in FIRST_USE_MODULES.items():
        if package not in sys.modules:
            continue
        for name in modules:
            if name in sys.modules:
                continue
            with contextlib.suppress(Exception):
                importlib.import_module(name)
                imported.append(name)
    return imported


def build_middleware_stacks(app: Any) -> list[str]:
    """Build the lazily-built middleware stack of each Starlette app in uvicorn's wrapper chain (``.app``)."""
    built = []
    for _ in range(MAX_WRAPPERS):
        if app is None:
            break
        build = getattr(type(app), "build_middleware_stack", None)
        if callable(build) and getattr(app, "middleware_stack", False) is None and _known_middleware(app):
            app.middleware_stack = app.build_middleware_stack()
            built.append(f"built the middleware stack of {type(app).__qualname__}")
        app = getattr(app, "app", None)
    return built


def _known_middleware(app: Any) -> bool:
    classes = [getattr(entry, "cls", None) for entry in getattr(app, "user_middleware", [])]
    handlers = getattr(app, "exception_handlers", {})
    return all(
        cls is not None and getattr(cls, "__module__", "").startswith(KNOWN_MIDDLEWARE) for cls in classes
    ) and isinstance(handlers, dict)
