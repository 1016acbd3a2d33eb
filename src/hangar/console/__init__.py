"""The web console at ``/console/``: server-rendered pages over the control plane and the session manager.

``PAGES`` lists (method, path template, handler, name); the gateway mounts them without its SigV4 gate, because
every page and action checks the console's own sign-in (``auth.py``).
"""

from __future__ import annotations

from hangar.console import invoke, logs, pages, ws
from hangar.console.auth import Handler
from hangar.console.ws import WsHandler

PAGES: list[tuple[str, str, Handler | WsHandler, str]] = [
    ("GET", "/console", pages.home, "ConsoleHome"),
    ("GET", "/console/", pages.home, "ConsoleHome"),
    ("GET", "/console/login", pages.login_form, "ConsoleLoginForm"),
    ("POST", "/console/login", pages.login, "ConsoleLogin"),
    ("POST", "/console/logout", pages.logout, "ConsoleLogout"),
    ("GET", "/console/static/{name}", pages.static, "ConsoleStatic"),
    ("GET", "/console/runtimes", pages.runtimes, "ConsoleRuntimes"),
    ("GET", "/console/runtimes/{runtimeId}", pages.runtime, "ConsoleRuntime"),
    ("GET", "/console/sessions", pages.sessions, "ConsoleSessions"),
    ("POST", "/console/sessions/{runtimeId}/{sessionId}/stop", pages.stop, "ConsoleStopSession"),
    ("GET", "/console/invoke", invoke.playground, "ConsoleInvokePage"),
    ("POST", "/console/invoke/{runtimeId}", invoke.invoke, "ConsoleInvoke"),
    ("WEBSOCKET", "/console/ws/{runtimeId}", ws.relay, "ConsoleWebSocket"),
    ("GET", "/console/logs/{runtimeId}/{sessionId}", logs.log_page, "ConsoleSessionLog"),
    ("GET", "/console/logs/{runtimeId}/{sessionId}/events", logs.log_events, "ConsoleSessionLogEvents"),
]
