"""Jinja2 rendering of the console's pages (templates and static files ship inside the package)."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from jinja2 import Environment, FileSystemLoader, select_autoescape
from starlette.requests import Request
from starlette.responses import HTMLResponse

HERE = Path(__file__).resolve().parent
STATIC = HERE / "static"
_ENV = Environment(loader=FileSystemLoader(HERE / "templates"), autoescape=select_autoescape(default=True))


def _age(started: object) -> str:
    """Seconds since an epoch timestamp, as '3m 12s' (the operator API gives epoch floats)."""
    if not isinstance(started, int | float):
        return "-"
    seconds = max(0, int(datetime.now(UTC).timestamp() - started))
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}h {minutes}m" if hours else f"{minutes}m {secs}s"


def _mib(value: object) -> str:
    return f"{value / 1048576:.1f} MiB" if isinstance(value, int | float) else "-"


_ENV.filters["age"] = _age
_ENV.filters["mib"] = _mib


def page(request: Request, name: str, status_code: int = 200, **context: Any) -> HTMLResponse:
    session = getattr(request.state, "console", None)
    html = _ENV.get_template(name).render(session=session, path=request.url.path, **context)
    response = HTMLResponse(html, status_code=status_code)
    response.headers["cache-control"] = "no-store"
    response.headers["x-frame-options"] = "DENY"
    response.headers["content-security-policy"] = (
        "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self'; frame-ancestors 'none'"
    )
    return response
