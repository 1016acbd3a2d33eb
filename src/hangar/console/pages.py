"""Console pages: sign-in, runtimes, one runtime, live sessions (stop one), templates and pools."""

from __future__ import annotations

import asyncio
import logging
import secrets
import socket
from typing import Any

from starlette.requests import Request
from starlette.responses import FileResponse, RedirectResponse, Response

from hangar.console import auth
from hangar.console.render import STATIC, page
from hangar.control import commands as c
from hangar.control.service import ControlPlane
from hangar.domain.errors import HangarError, NotFoundError
from hangar.domain.names import LOCAL_NODE
from hangar.sessions.manager import SessionManager
from hangar.sessions.session import Session

log = logging.getLogger("hangar.console")
STATS_TIMEOUT_S = 2.0
LIST_LIMIT = 100
BUILD_LOG_TAIL = 64 * 1024
_STATIC_TYPES = {"console.css": "text/css", "console.js": "text/javascript"}


async def login_form(request: Request, _params: dict[str, str]) -> Response:
    return _login_page(request, None, 200)


def _login_page(request: Request, error: str | None, status: int) -> Response:
    token = secrets.token_urlsafe(32)
    response = page(request, "login.html", status_code=status, error=error, login_csrf=token)
    auth.set_cookie(response, request, auth.LOGIN_COOKIE, token, max_age=600)
    return response


async def login(request: Request, _params: dict[str, str]) -> Response:
    state = auth.state_of(request)
    form = await request.form()
    sent = form.get("csrf")
    expected = request.cookies.get(auth.LOGIN_COOKIE)
    if not isinstance(sent, str) or not expected or not secrets.compare_digest(sent.encode(), expected.encode()):
        return _login_page(request, "The form expired: try again.", 403)
    client = request.client.host if request.client else "unknown"
    key_id, secret = form.get("access_key_id"), form.get("secret_access_key")
    key_id = key_id.strip()[:128] if isinstance(key_id, str) else ""
    if state.limited(client, key_id):
        return _login_page(request, "Too many failed sign-ins: wait a minute.", 429)
    principal = None
    if isinstance(secret, str):
        principal = await auth.check_key(request.app.state.services.credentials, key_id, secret)
    if principal is None:
        state.failed(client, key_id)
        log.info("console sign-in refused from %s", client)
        return _login_page(request, "Unknown access key or wrong secret.", 401)
    state.close(request.cookies.get(auth.COOKIE))
    response = RedirectResponse("/console/runtimes", status_code=303)
    auth.set_cookie(response, request, auth.COOKIE, state.open(principal), max_age=int(auth.ABSOLUTE_S))
    response.delete_cookie(auth.LOGIN_COOKIE, path="/console")
    return response


@auth.signed_in
async def logout(request: Request, _params: dict[str, str]) -> Response:
    form = await request.form()
    csrf = form.get("csrf")
    if not auth.csrf_ok(request.state.console, csrf if isinstance(csrf, str) else None):
        return Response("Missing or wrong CSRF token.", status_code=403, media_type="text/plain")
    auth.state_of(request).close(request.cookies.get(auth.COOKIE))
    response = RedirectResponse("/console/login", status_code=303)
    response.delete_cookie(auth.COOKIE, path="/console")
    return response


@auth.signed_in
async def home(request: Request, _params: dict[str, str]) -> Response:
    return RedirectResponse("/console/runtimes", status_code=303)


@auth.signed_in
async def runtimes(request: Request, _params: dict[str, str]) -> Response:
    control = request.app.state.services.control
    listed = (await control.execute(c.ListRuntimes(max_results=LIST_LIMIT)))["agentRuntimes"]
    for item in listed:
        if item["status"].endswith("FAILED"):
            detail = await control.execute(c.GetRuntime(item["agentRuntimeId"]))
            item["failureReason"] = detail.get("failureReason")
    return page(request, "runtimes.html", runtimes=listed)


@auth.signed_in
async def runtime(request: Request, params: dict[str, str]) -> Response:
    control = request.app.state.services.control
    runtime_id = params["runtimeId"]
    try:
        detail = await control.execute(c.GetRuntime(runtime_id))
    except NotFoundError:
        return page(request, "missing.html", status_code=404, what=f"runtime {runtime_id}")
    versions = (await control.execute(c.ListRuntimeVersions(runtime_id, max_results=LIST_LIMIT)))["agentRuntimes"]
    for item in versions:
        if item["status"].endswith("FAILED"):
            one = await control.execute(c.GetRuntime(runtime_id, version=int(item["agentRuntimeVersion"])))
            item["failureReason"] = one.get("failureReason")
    endpoints = (await control.execute(c.ListEndpoints(runtime_id, max_results=LIST_LIMIT)))["runtimeEndpoints"]
    live = [s for s in await _sessions(_manager(request)) if s["runtimeId"] == runtime_id]
    account = request.state.console.principal.account_id
    build_log = await asyncio.to_thread(_build_log, request.app.state.services.control, runtime_id, account)
    return page(
        request,
        "runtime.html",
        runtime=detail,
        versions=versions,
        endpoints=endpoints,
        sessions=live,
        build_log=build_log,
    )


def _build_log(control: ControlPlane, runtime_id: str, account_id: str) -> tuple[str, str] | None:
    """(version, the tail of its build log) of the DEFAULT endpoint's version, when it was built from code."""
    try:
        target = control.resolve_target(runtime_id, None, account_id)
    except HangarError:
        return None  # nothing READY to serve: the failure reason says why
    path = target.prepared.env_dir.parent / "build.log"
    if target.prepared.image is not None or not path.is_file():
        return None
    with path.open("rb") as handle:
        size = handle.seek(0, 2)
        handle.seek(max(0, size - BUILD_LOG_TAIL))
        text = handle.read().decode("utf-8", "replace")
    return target.version, text if size <= BUILD_LOG_TAIL else "…" + text


@auth.signed_in
async def sessions(request: Request, _params: dict[str, str]) -> Response:
    manager = _manager(request)
    listed = await _sessions(manager)
    live = [s for s in listed if s["state"] != "Terminated"]
    ended = [s for s in listed if s["state"] == "Terminated"][:20]
    return page(
        request,
        "sessions.html",
        live=live,
        ended=ended,
        backend=manager.describe_backend(),
        node=socket.gethostname(),
        pool=manager.pool.describe(),
        templates=manager.templates.describe(),
        stopped=request.query_params.get("stopped"),
    )


@auth.signed_in
async def stop(request: Request, params: dict[str, str]) -> Response:
    """Stop a live session, as StopRuntimeSession does (the manager's use case, the console user's say-so)."""
    form = await request.form()
    csrf = form.get("csrf")
    if not auth.csrf_ok(request.state.console, csrf if isinstance(csrf, str) else None):
        return Response("Missing or wrong CSRF token.", status_code=403, media_type="text/plain")
    who = request.state.console.principal.name
    stopped = await _manager(request).stop_session(
        params["runtimeId"], params["sessionId"], reason=f"stopped from the console by {who}"
    )
    if not stopped:
        return page(request, "missing.html", status_code=404, what=f"live session {params['sessionId']}")
    return RedirectResponse(f"/console/sessions?stopped={params['sessionId']}", status_code=303)


async def static(request: Request, params: dict[str, str]) -> Response:
    name = params["name"]
    if name not in _STATIC_TYPES:
        return Response("Not found", status_code=404, media_type="text/plain")
    return FileResponse(STATIC / name, media_type=_STATIC_TYPES[name], headers={"cache-control": "no-cache"})


def _manager(request: Request) -> SessionManager:
    manager: SessionManager = request.app.state.services.sessions
    return manager


async def _stats(session: Session) -> tuple[int | None, float | None]:
    try:
        stats = await asyncio.wait_for(session.stats(), STATS_TIMEOUT_S)
    except Exception as exc:  # a sandbox ending right now has no stats; the page must still render
        log.debug("no stats for sandbox %s: %s", session.sandbox_id, exc)
        return None, None
    return stats.memory_bytes, stats.cpu_seconds


async def _sessions(manager: SessionManager) -> list[dict[str, Any]]:
    """The operator API's session list, with each live session's memory use and CPU time."""
    live = manager.live_sessions()
    stats = await asyncio.gather(*(_stats(s) for s in live))
    by_sandbox = {s.sandbox_id: m for s, m in zip(live, stats, strict=True)}
    listed: list[dict[str, Any]] = []
    for entry in manager.list_sessions():
        row = dict(entry)
        row.setdefault("node", LOCAL_NODE)  # cluster sessions name theirs
        if row["state"] != "Terminated":
            row["memoryBytes"], row["cpuSeconds"] = by_sandbox.get(str(row["sandboxId"]), (None, None))
        listed.append(row)
    return listed


def error_page(request: Request, exc: HangarError) -> Response:
    return page(request, "missing.html", status_code=exc.status, what=exc.message)
