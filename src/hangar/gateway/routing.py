"""Routing on the raw (still percent-encoded) path.

AgentCore's data-plane paths carry a whole ARN as one segment, percent-encoded (``%2F`` included); a router
that decodes first would split it. So templates are matched against ``scope["raw_path"]`` and each captured
segment is percent-decoded only after the match. Control-plane paths end in ``/`` exactly as boto3 sends
them; there are no slash redirects.
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Literal
from urllib.parse import unquote

from starlette.requests import Request
from starlette.responses import Response
from starlette.websockets import WebSocket

HttpHandler = Callable[[Request, dict[str, str]], Awaitable[Response]]
WebSocketHandler = Callable[[WebSocket, dict[str, str]], Awaitable[None]]

# How the gateway authenticates a route before calling its handler:
#   "sigv4"  - every request must carry a valid SigV4 signature (control plane, operator API)
#   "none"   - public (health check, console assets)
#   "custom" - the handler authenticates itself (data plane: SigV4 or JWT depending on the runtime)
AuthMode = Literal["sigv4", "none", "custom"]

# "{name}" captures one segment; "{name+}" (greedy, as in AWS's models) captures the rest, slashes included.
_PARAM = re.compile(r"\{([a-zA-Z_][a-zA-Z0-9_]*)(\+?)\}")


@dataclass(frozen=True)
class Route:
    method: str  # "GET", "POST", ... or "WEBSOCKET"
    template: str  # e.g. "/runtimes/{agentRuntimeId}/"
    handler: HttpHandler | WebSocketHandler
    name: str
    auth: AuthMode = "sigv4"
    pattern: re.Pattern[str] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        regex = ""
        last = 0
        for match in _PARAM.finditer(self.template):
            regex += re.escape(self.template[last : match.start()])
            regex += f"(?P<{match.group(1)}>{'.+' if match.group(2) else '[^/]+'})"
            last = match.end()
        regex += re.escape(self.template[last:])
        object.__setattr__(self, "pattern", re.compile(f"^{regex}$"))

    def match(self, raw_path: str) -> dict[str, str] | None:
        found = self.pattern.match(raw_path)
        if found is None:
            return None
        return {key: unquote(value) for key, value in found.groupdict().items()}


@dataclass(frozen=True)
class RouteMatch:
    route: Route
    params: dict[str, str]


_CACHED_PATHS = 1024  # matches remembered (a runtime's invoke path is the same on every call); cleared when full
_CACHED_PATH_LENGTH = 1024  # longer paths are matched every time


class RouteTable:
    """An ordered list of routes; the first template that matches the raw path wins."""

    def __init__(self, routes: list[Route]) -> None:
        self.routes = list(routes)
        self._matched: dict[tuple[str, str], RouteMatch] = {}

    def resolve(self, method: str, raw_path: str) -> tuple[RouteMatch | None, bool]:
        """Return (match, path_known). ``path_known`` tells a 405 from a 404 when nothing matched.

        Only routes of the request's method are tried first (every invoke pays for this lookup); the other
        templates are matched only to tell a 405 from a 404. A match is a pure function of (method, raw path), so
        it is remembered: a warm invoke skips the regular expressions and the decoding of its ARN.
        """
        key = (method, raw_path)
        known = self._matched.get(key)
        if known is not None:
            return RouteMatch(known.route, dict(known.params)), True  # the handler gets a dict of its own
        for route in self.routes:
            if route.method == method or (route.method == "GET" and method == "HEAD"):
                params = route.match(raw_path)
                if params is not None:
                    if len(raw_path) <= _CACHED_PATH_LENGTH:
                        if len(self._matched) >= _CACHED_PATHS:
                            self._matched.clear()
                        self._matched[key] = RouteMatch(route, dict(params))
                    return RouteMatch(route, params), True
        return None, any(route.pattern.match(raw_path) for route in self.routes)
