"""Debug actions: with ``debug=True`` a payload ``{"_agent_core_app_action": ...}`` drives the app's health state.

Lets an operator inspect and force the ``/ping`` status of a live agent through the invoke path alone.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any, Protocol

from ._ping import PingStatus
from ._serialize import CompactJSONResponse

__all__ = ["DEBUG_ACTION_KEY", "debug_action_response"]

DEBUG_ACTION_KEY = "_agent_core_app_action"


class _HealthControls(Protocol):
    def ping_body(self) -> dict[str, Any]: ...

    def get_async_task_info(self) -> dict[str, Any]: ...

    def force_ping_status(self, status: PingStatus) -> None: ...

    def clear_forced_ping_status(self) -> None: ...


def _actions(app: _HealthControls) -> dict[str, Callable[[], dict[str, Any]]]:
    def forcing(status: PingStatus | None, label: str) -> Callable[[], dict[str, Any]]:
        def act() -> dict[str, Any]:
            if status is None:
                app.clear_forced_ping_status()
            else:
                app.force_ping_status(status)
            return {"forced_status": label}

        return act

    return {
        "ping_status": app.ping_body,
        "job_status": app.get_async_task_info,
        "force_healthy": forcing(PingStatus.HEALTHY, "Healthy"),
        "force_busy": forcing(PingStatus.HEALTHY_BUSY, "HealthyBusy"),
        "clear_forced_status": forcing(None, "Cleared"),
    }


def debug_action_response(app: _HealthControls, payload: Any, logger: logging.Logger) -> CompactJSONResponse | None:
    """The response to a debug action, or None when the payload carries none (the handler then runs).

    Non-object payloads carry no action and go to the handler.
    """
    if not isinstance(payload, dict):
        return None
    action = payload.get(DEBUG_ACTION_KEY)
    if not action:
        return None
    try:
        act = _actions(app).get(action)
        if act is None:
            return CompactJSONResponse({"error": f"Unknown action: {action}"}, status_code=400)
        return CompactJSONResponse(act())
    except Exception as exc:
        logger.exception("Debug action %r failed", action)
        return CompactJSONResponse({"error": "Debug action failed", "details": str(exc)}, status_code=500)
