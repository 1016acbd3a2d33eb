"""The ``gvisor`` sandbox backend: sessions in gVisor (``runsc``) sandboxes.

``GVisorBackend`` and ``GVisorSandbox`` load on first use: ``guard`` must import anywhere (it serves the ``process``
backend too), while the backend itself needs Linux.
"""

from __future__ import annotations

from typing import Any

__all__ = ["GVisorBackend", "GVisorSandbox"]


def __getattr__(name: str) -> Any:
    if name in __all__:
        from hangar.sandbox.gvisor import backend

        return getattr(backend, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
