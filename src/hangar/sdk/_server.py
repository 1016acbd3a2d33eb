"""Serving an app with uvicorn, on the address the AgentCore contract expects.

Inside a container or a Hangar sandbox the agent must listen on every interface (the runtime reaches it from
outside its network namespace); on a developer's machine it stays on loopback.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

__all__ = ["SANDBOX_MARKER_ENV", "default_host", "serve"]

SANDBOX_MARKER_ENV = "HANGAR_SANDBOX"  # set (to "1") by Hangar in every sandbox it starts
_CONTAINER_MARKER_ENV = "DOCKER_CONTAINER"


def default_host(environ: Mapping[str, str] = os.environ, dockerenv: Path = Path("/.dockerenv")) -> str:
    """0.0.0.0 in a container (``/.dockerenv``, ``$DOCKER_CONTAINER``) or a Hangar sandbox, else 127.0.0.1."""
    in_container = dockerenv.exists() or bool(environ.get(_CONTAINER_MARKER_ENV))
    in_sandbox = environ.get(SANDBOX_MARKER_ENV, "") not in ("", "0")
    return "0.0.0.0" if in_container or in_sandbox else "127.0.0.1"


def serve(app: Any, port: int, host: str | None, debug: bool, **uvicorn_options: Any) -> None:
    """Run uvicorn in the foreground; quiet unless ``debug`` (no access log, warnings only)."""
    import uvicorn

    options: dict[str, Any] = {
        "host": default_host() if host is None else host,
        "port": port,
        "access_log": debug,
        "log_level": "info" if debug else "warning",
    }
    options.update(uvicorn_options)
    uvicorn.run(app, **options)
