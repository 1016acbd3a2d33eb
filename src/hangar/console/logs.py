"""A session's log (its stdout/stderr, from the log store) as a page that follows live.

The page renders what is kept, then its script asks ``.../events?after=<seq>`` every second for what came since:
sequence numbers only grow within a stream, so nothing is shown twice and nothing is skipped.
"""

from __future__ import annotations

import asyncio

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from hangar.console import auth
from hangar.console.render import page
from hangar.observability.logs import GROUP_PREFIX, STREAM_KIND, LogEvent, LogStore, Stream

MAX_EVENTS = 1000  # per answer: the page asks again at once for the rest


def _store(request: Request) -> LogStore:
    store: LogStore = request.app.state.services.sessions.logs.store
    return store


def find_stream(store: LogStore, runtime_id: str, session_id: str) -> Stream | None:
    """The session's newest stream, in whichever endpoint's group of the runtime it ran."""
    prefix = f"{GROUP_PREFIX}{runtime_id}-"
    found: list[Stream] = []
    for group, _directory in store.groups():
        if group.startswith(prefix):
            found += [s for s in store.streams(group) or [] if s.name.endswith(STREAM_KIND + session_id)]
    return max(found, key=lambda s: s.created, default=None)


def _after(store: LogStore, runtime_id: str, session_id: str, after: int) -> tuple[Stream | None, list[LogEvent]]:
    stream = find_stream(store, runtime_id, session_id)
    if stream is None:
        return None, []
    events = [e for e in stream.events() if e.seq > after]
    return stream, events[:MAX_EVENTS]


def _live(request: Request, runtime_id: str, session_id: str) -> bool:
    return request.app.state.services.sessions.get(runtime_id, session_id) is not None


@auth.signed_in
async def log_page(request: Request, params: dict[str, str]) -> Response:
    runtime_id, session_id = params["runtimeId"], params["sessionId"]
    stream, events = await asyncio.to_thread(_after, _store(request), runtime_id, session_id, -1)
    return page(
        request,
        "logs.html",
        runtime_id=runtime_id,
        session_id=session_id,
        stream=stream,
        events=events,
        last=events[-1].seq if events else -1,
        live=_live(request, runtime_id, session_id),
    )


@auth.signed_in
async def log_events(request: Request, params: dict[str, str]) -> Response:
    runtime_id, session_id = params["runtimeId"], params["sessionId"]
    raw = request.query_params.get("after", "-1")
    after = int(raw) if raw.lstrip("-").isdigit() else -1
    stream, events = await asyncio.to_thread(_after, _store(request), runtime_id, session_id, after)
    return JSONResponse(
        {
            "stream": stream.name if stream else None,
            "group": stream.group if stream else None,
            "events": [[e.timestamp, e.seq, e.message] for e in events],
            "live": _live(request, runtime_id, session_id),
        },
        headers={"cache-control": "no-store"},
    )
