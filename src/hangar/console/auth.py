"""Console sign-in: server-side sessions behind an opaque cookie, CSRF tokens, and a login rate limit.

The browser only ever holds a random session id (HttpOnly, SameSite=Strict, Secure over https); the access key's
secret is checked once at login against the credential store and never kept. Every console form POST carries the
session's CSRF token (a form field, or the ``X-CSRF-Token`` header for the playground's fetch()).
"""

from __future__ import annotations

import secrets
import time
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from starlette.requests import HTTPConnection, Request
from starlette.responses import RedirectResponse, Response

from hangar.auth.credentials import CredentialStore
from hangar.domain.types import Principal

COOKIE = "hangar_console"
LOGIN_COOKIE = "hangar_console_login"  # login CSRF: a double-submit token set with the login form
IDLE_S = 30 * 60.0
ABSOLUTE_S = 8 * 3600.0
MAX_SESSIONS = 1000
LOGIN_FAILURES = 5  # per access key id within LOGIN_WINDOW_S, then 429 until the window slides
CLIENT_FAILURES = 20  # per client address (guessing many key ids) within the same window
LOGIN_WINDOW_S = 60.0

Handler = Callable[[Request, dict[str, str]], Awaitable[Response]]


@dataclass
class ConsoleSession:
    principal: Principal
    csrf: str
    created: float
    seen: float


@dataclass
class ConsoleState:
    """Per server (kept on the app's state): the signed-in sessions and recent login failures."""

    clock: Callable[[], float] = time.monotonic
    sessions: dict[str, ConsoleSession] = field(default_factory=dict)
    failures: dict[str, deque[float]] = field(default_factory=dict)

    def open(self, principal: Principal) -> str:
        """A fresh id at every login (never one the browser brought: no session fixation)."""
        now = self.clock()
        self._expire(now)
        if len(self.sessions) >= MAX_SESSIONS:
            oldest = min(self.sessions, key=lambda key: self.sessions[key].seen)
            del self.sessions[oldest]
        session_id = secrets.token_urlsafe(32)
        self.sessions[session_id] = ConsoleSession(principal, secrets.token_urlsafe(32), now, now)
        return session_id

    def get(self, session_id: str | None) -> ConsoleSession | None:
        if not session_id:
            return None
        found = self.sessions.get(session_id)
        now = self.clock()
        if found is None:
            return None
        if now - found.seen > IDLE_S or now - found.created > ABSOLUTE_S:
            del self.sessions[session_id]
            return None
        found.seen = now
        return found

    def close(self, session_id: str | None) -> None:
        if session_id:
            self.sessions.pop(session_id, None)

    def limited(self, client: str, key_id: str) -> bool:
        return (
            len(self._window(f"key:{key_id}")) >= LOGIN_FAILURES
            or len(self._window(f"client:{client}")) >= CLIENT_FAILURES
        )

    def failed(self, client: str, key_id: str) -> None:
        now = self.clock()
        self._window(f"key:{key_id}").append(now)
        self._window(f"client:{client}").append(now)
        if len(self.failures) > 10 * MAX_SESSIONS:  # bounded memory under a flood of made-up key ids
            self.failures = {k: w for k, w in self.failures.items() if w}

    def _window(self, client: str) -> deque[float]:
        window = self.failures.setdefault(client, deque())
        cutoff = self.clock() - LOGIN_WINDOW_S
        while window and window[0] < cutoff:
            window.popleft()
        return window

    def _expire(self, now: float) -> None:
        for key in [k for k, s in self.sessions.items() if now - s.seen > IDLE_S or now - s.created > ABSOLUTE_S]:
            del self.sessions[key]


def state_of(request: HTTPConnection) -> ConsoleState:
    state: ConsoleState | None = getattr(request.app.state, "console", None)
    if state is None:
        state = request.app.state.console = ConsoleState()
    return state


async def check_key(credentials: CredentialStore, access_key_id: str, secret: str) -> Principal | None:
    """The key's principal when ``secret`` is its secret (constant-time compare), else None."""
    if not access_key_id or not secret or len(access_key_id) > 128 or len(secret) > 256:
        return None
    key = await credentials.signing_key(access_key_id)
    if key is None or not secrets.compare_digest(key.secret.encode(), secret.encode()):
        return None
    await credentials.record_use(access_key_id)
    return Principal(kind="sigv4", account_id=key.account_id, name=key.principal_name, access_key_id=key.access_key_id)


def is_https(request: Request) -> bool:
    return request.url.scheme == "https"


def set_cookie(response: Response, request: Request, name: str, value: str, max_age: int | None) -> None:
    response.set_cookie(
        name,
        value,
        max_age=max_age,
        path="/console",
        httponly=True,
        samesite="strict",
        secure=is_https(request),
    )


def current(request: Request) -> ConsoleSession | None:
    return state_of(request).get(request.cookies.get(COOKIE))


def signed_in(handler: Handler) -> Handler:
    """Wrap a console page: without a live session, GETs go to the login page and anything else gets a 401."""

    async def wrapped(request: Request, params: dict[str, str]) -> Response:
        session = current(request)
        if session is None:
            if request.method in ("GET", "HEAD"):
                return RedirectResponse("/console/login", status_code=303)
            return Response("Sign in first.", status_code=401, media_type="text/plain")
        request.state.console = session
        return await handler(request, params)

    return wrapped


def csrf_ok(session: ConsoleSession, sent: str | None) -> bool:
    return sent is not None and secrets.compare_digest(sent.encode(), session.csrf.encode())
