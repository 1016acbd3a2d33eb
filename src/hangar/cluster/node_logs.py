"""Session logs in cluster mode: each node keeps its sessions' logs; the gateway's CloudWatch Logs API reads them.

Node side: ``ROUTES`` (added to the node API) serve the node's ``LogStore`` as JSON: ``GET /node/v1/logs/groups``
→ ``{"groups": [name, ...]}``; ``GET /node/v1/logs/streams?group=G`` → ``{"streams": [{"name", "created",
"storedBytes", "first", "last"}]}`` (``first``/``last``: ``[timestamp, seq, message]`` or null; 404 ``NotFound``
for a group the node does not hold); ``GET /node/v1/logs/events?group=G&stream=S`` → ``{"events": [[timestamp,
seq, message], ...]}``. Signed like every node API request (the path without its query).

Gateway side: ``RemoteLogStore`` offers what ``gateway/logs_api.py`` and the console read from a ``LogStore``
(``groups``, ``streams``, ``retention_s``; streams with ``name``, ``created``, ``events``, ``bounds``,
``stored_bytes``), merged over every live node. It is called from a worker thread (as the local store's file I/O
is), so it uses a blocking HTTP client. A stream found on two nodes (a session id started again elsewhere on the same
day) is read as one, its events in (timestamp, seq) order.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import httpx
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from hangar.cluster import node_auth
from hangar.cluster.placement import NodeDirectory
from hangar.observability.logs import LogEvent, LogStore

NOT_FOUND = "NotFound"
TIMEOUT_S = 30.0


# --- node side


def _store(request: Request) -> LogStore:
    store: LogStore = request.app.state.node.manager.logs.store
    return store


def _event(event: LogEvent | None) -> list[Any] | None:
    return None if event is None else [event.timestamp, event.seq, event.message]


async def groups(request: Request) -> Response:
    found = await asyncio.to_thread(_store(request).groups)
    return JSONResponse({"groups": [name for name, _ in found]})


async def streams(request: Request) -> Response:
    store = _store(request)
    group = request.query_params.get("group", "")

    def read() -> list[dict[str, Any]] | None:
        found = store.streams(group)
        if found is None:
            return None
        out = []
        for stream in found:
            first, last = stream.bounds()
            out.append(
                {
                    "name": stream.name,
                    "created": stream.created,
                    "storedBytes": stream.stored_bytes(),
                    "first": _event(first),
                    "last": _event(last),
                }
            )
        return out

    rows = await asyncio.to_thread(read)
    if rows is None:
        return JSONResponse(
            {"code": NOT_FOUND, "message": f"no log group {group}"}, 404, {"X-Hangar-Node-Error": NOT_FOUND}
        )
    return JSONResponse({"streams": rows})


async def events(request: Request) -> Response:
    store = _store(request)
    group, name = request.query_params.get("group", ""), request.query_params.get("stream", "")

    def read() -> list[list[Any]]:
        stream = next((s for s in store.streams(group) or [] if s.name == name), None)
        return [] if stream is None else [[e.timestamp, e.seq, e.message] for e in stream.events()]

    return JSONResponse({"events": await asyncio.to_thread(read)})


ROUTES = [
    Route("/node/v1/logs/groups", groups, methods=["GET"]),
    Route("/node/v1/logs/streams", streams, methods=["GET"]),
    Route("/node/v1/logs/events", events, methods=["GET"]),
]


# --- gateway side


@dataclass(frozen=True)
class _Part:
    """One node's copy of a stream."""

    address: str
    created: int
    stored: int
    first: LogEvent | None
    last: LogEvent | None


class RemoteStream:
    """A stream as the nodes hold it (usually one node); events read when asked for."""

    def __init__(self, store: RemoteLogStore, group: str, name: str, parts: list[_Part]) -> None:
        self._store = store
        self.group = group
        self.name = name
        self._parts = parts
        self.created = min(p.created for p in parts)

    def stored_bytes(self) -> int:
        return sum(p.stored for p in self._parts)

    def bounds(self) -> tuple[LogEvent | None, LogEvent | None]:
        firsts = [p.first for p in self._parts if p.first is not None]
        lasts = [p.last for p in self._parts if p.last is not None]
        order: Callable[[LogEvent], tuple[int, int]] = lambda e: (e.timestamp, e.seq)  # noqa: E731
        return (min(firsts, key=order) if firsts else None, max(lasts, key=order) if lasts else None)

    def events(self) -> Iterator[LogEvent]:
        found: list[LogEvent] = []
        for part in self._parts:
            doc = self._store.get(part.address, "/node/v1/logs/events", {"group": self.group, "stream": self.name})
            found += [_parse(row) for row in (doc or {}).get("events", [])]
        if len(self._parts) > 1:
            found.sort(key=lambda e: (e.timestamp, e.seq))
        return iter(found)


class RemoteLogStore:
    """The gateway's view of every node's log store (see the module docstring)."""

    def __init__(self, directory: NodeDirectory, key: Callable[[], bytes | None], retention_s: float) -> None:
        self.directory = directory
        self.retention_s = retention_s
        self._key = key
        self._http = httpx.Client(timeout=TIMEOUT_S)

    def get(self, address: str, path: str, params: dict[str, str] | None = None) -> dict[str, Any] | None:
        """One node's JSON answer; None when it does not hold the thing or cannot answer (the others still do)."""
        key = self._key()
        if key is None:
            return None
        try:
            answer = self._http.get(
                address + path, params=params, headers={node_auth.HEADER: node_auth.sign(key, "GET", path)}
            )
        except httpx.HTTPError:
            return None
        if answer.status_code != 200:
            return None
        doc = answer.json()
        return doc if isinstance(doc, dict) else None

    def _addresses(self) -> list[str]:
        return [node.address for node in self.directory.cached()]

    def groups(self) -> list[tuple[str, None]]:
        names: set[str] = set()
        for address in self._addresses():
            names.update(str(n) for n in (self.get(address, "/node/v1/logs/groups") or {}).get("groups", []))
        return [(name, None) for name in sorted(names)]

    def streams(self, group: str) -> list[RemoteStream] | None:
        parts: dict[str, list[_Part]] = {}
        held = False
        for address in self._addresses():
            doc = self.get(address, "/node/v1/logs/streams", {"group": group})
            if doc is None:
                continue
            held = True
            for row in doc.get("streams", []):
                part = _Part(
                    address,
                    int(row.get("created", 0)),
                    int(row.get("storedBytes", 0)),
                    _parse(row["first"]) if row.get("first") else None,
                    _parse(row["last"]) if row.get("last") else None,
                )
                parts.setdefault(str(row["name"]), []).append(part)
        if not held:
            return None
        return [RemoteStream(self, group, name, p) for name, p in sorted(parts.items())]

    def close(self) -> None:
        self._http.close()


def _parse(row: list[Any]) -> LogEvent:
    return LogEvent(int(row[0]), int(row[1]), str(row[2]))
