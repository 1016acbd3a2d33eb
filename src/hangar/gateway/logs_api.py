"""The CloudWatch Logs read API over session logs (JSON 1.1: ``POST /``, ``X-Amz-Target: Logs_20140328.<Op>``).

DescribeLogGroups, DescribeLogStreams, GetLogEvents and FilterLogEvents, shaped as botocore's ``logs`` model says,
so ``aws logs get-log-events``/``filter-log-events``/``describe-log-streams`` and boto3 work with ``--endpoint-url``.
``ecr.py`` owns ``POST /`` and hands this module the requests whose target is a Logs one.

Tokens: GetLogEvents' are positions in a stream (``f/<seq>/s`` reads events from ``seq`` on, ``b/<seq>/s`` the
events before it); at the end, the forward token comes back unchanged, which is how clients know to stop.
FilterLogEvents' ``nextToken`` names the last event returned; events are ordered by (timestamp, stream, seq).
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
from collections.abc import Callable
from typing import Any

import anyio.to_thread
from starlette.requests import Request
from starlette.responses import Response

from hangar.artifacts.images.errors import EcrError
from hangar.domain.errors import HangarError
from hangar.gateway import authn
from hangar.gateway.app import read_capped_body
from hangar.observability.logs import LogEvent, LogStore, Stream

TARGET_PREFIX = "Logs_20140328."
CONTENT_TYPE = "application/x-amz-json-1.1"
MAX_BODY = 256 * 1024
MAX_EVENTS = 10_000
MAX_RESPONSE_BYTES = 1024 * 1024
MAX_DESCRIBE = 50
_EVENT_TOKEN = re.compile(r"^([fb])/(\d{1,20})/s$")


class LogsError(EcrError):
    """A CloudWatch Logs error: ``__type`` in the body, as botocore's JSON parser reads it."""


def _invalid(message: str) -> LogsError:
    return LogsError("InvalidParameterException", message)


def _int(document: dict[str, Any], key: str, low: int, high: int, default: int | None = None) -> int | None:
    value = document.get(key, default)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        raise _invalid(f"{key} must be an integer")
    if not low <= value <= high:
        raise _invalid(
            f"1 validation error detected: Value '{value}' at '{key}' failed to satisfy constraint: "
            f"Member must have value between {low} and {high}"
        )
    return int(value)


def _str(document: dict[str, Any], key: str) -> str | None:
    value = document.get(key)
    if value is not None and not isinstance(value, str):
        raise _invalid(f"{key} must be a string")
    return value


class LogsApi:
    def __init__(self, store: LogStore, region: str, account_id: str) -> None:
        self.store = store
        self.region = region
        self.account_id = account_id

    def _arn(self, group: str) -> str:
        return f"arn:aws:logs:{self.region}:{self.account_id}:log-group:{group}"

    def _group(self, document: dict[str, Any]) -> tuple[str, list[Stream]]:
        name = _str(document, "logGroupName")
        identifier = _str(document, "logGroupIdentifier")
        if name and identifier:
            raise _invalid("logGroupName and logGroupIdentifier are mutually exclusive")
        if identifier:
            name = (
                identifier.split(":log-group:", 1)[1].removesuffix(":*") if ":log-group:" in identifier else identifier
            )
        if not name:
            raise _invalid("logGroupName or logGroupIdentifier is required")
        streams = self.store.streams(name)
        if streams is None:
            raise LogsError("ResourceNotFoundException", "The specified log group does not exist.")
        return name, streams

    def DescribeLogGroups(self, document: dict[str, Any]) -> dict[str, Any]:
        prefix = _str(document, "logGroupNamePrefix") or ""
        pattern = _str(document, "logGroupNamePattern") or ""
        if prefix and pattern:
            raise _invalid("logGroupNamePrefix and logGroupNamePattern are mutually exclusive")
        limit = _int(document, "limit", 1, MAX_DESCRIBE, MAX_DESCRIBE) or MAX_DESCRIBE
        groups = [(n, d) for n, d in self.store.groups() if n.startswith(prefix) and pattern.lower() in n.lower()]
        page, token = _page([n for n, _ in groups], document, limit)
        out = []
        for name in page:
            streams = self.store.streams(name) or []
            out.append(
                {
                    "logGroupName": name,
                    "creationTime": min((s.created for s in streams), default=0),
                    "retentionInDays": max(1, round(self.store.retention_s / 86400)),
                    "metricFilterCount": 0,
                    "arn": self._arn(name) + ":*",
                    "logGroupArn": self._arn(name),
                    "storedBytes": sum(s.stored_bytes() for s in streams),
                    "logGroupClass": "STANDARD",
                }
            )
        return {"logGroups": out, **({"nextToken": token} if token else {})}

    def DescribeLogStreams(self, document: dict[str, Any]) -> dict[str, Any]:
        group, streams = self._group(document)
        prefix = _str(document, "logStreamNamePrefix") or ""
        order = _str(document, "orderBy") or "LogStreamName"
        if order not in ("LogStreamName", "LastEventTime"):
            raise _invalid("orderBy must be LogStreamName or LastEventTime")
        if prefix and order == "LastEventTime":
            raise _invalid("Cannot order by LastEventTime with a logStreamNamePrefix.")
        limit = _int(document, "limit", 1, MAX_DESCRIBE, MAX_DESCRIBE) or MAX_DESCRIBE
        chosen = [s for s in streams if s.name.startswith(prefix)]
        if order == "LastEventTime":  # the only order that needs every stream's last event
            last_of = {s.name: _last_timestamp(s) for s in chosen}
            chosen.sort(key=lambda s: (last_of[s.name], s.name))
        if document.get("descending") is True:
            chosen.reverse()
        page, token = _page(chosen, document, limit)
        return {"logStreams": [self._describe(group, s) for s in page], **({"nextToken": token} if token else {})}

    def _describe(self, group: str, stream: Stream) -> dict[str, Any]:
        first, last = stream.bounds()
        row: dict[str, Any] = {
            "logStreamName": stream.name,
            "creationTime": stream.created,
            "arn": f"{self._arn(group)}:log-stream:{stream.name}",
            "storedBytes": stream.stored_bytes(),
        }
        if first is not None and last is not None:
            row |= {
                "firstEventTimestamp": first.timestamp,
                "lastEventTimestamp": last.timestamp,
                "lastIngestionTime": last.timestamp,
            }
        return row

    def GetLogEvents(self, document: dict[str, Any]) -> dict[str, Any]:
        _, streams = self._group(document)
        name = _str(document, "logStreamName")
        if not name:
            raise _invalid("logStreamName is required")
        stream = next((s for s in streams if s.name == name), None)
        if stream is None:
            raise LogsError("ResourceNotFoundException", "The specified log stream does not exist.")
        limit = _int(document, "limit", 1, MAX_EVENTS, MAX_EVENTS) or MAX_EVENTS
        start, end = _int(document, "startTime", 0, 2**62), _int(document, "endTime", 0, 2**62)
        events = [e for e in stream.events() if _in_time(e, start, end)]
        token = _str(document, "nextToken")
        if token:
            found = _EVENT_TOKEN.match(token)
            if found is None:
                raise _invalid("The specified nextToken is invalid.")
            forward, position = found.group(1) == "f", int(found.group(2))
        else:
            forward = document.get("startFromHead") is True
            position = 0 if forward else (events[-1].seq + 1 if events else 0)
        if forward:
            chosen = _capped([e for e in events if e.seq >= position][:limit])
        else:
            chosen = _capped_tail([e for e in events if e.seq < position][-limit:] if limit else [])
        after = chosen[-1].seq + 1 if chosen else position
        before = chosen[0].seq if chosen else position
        return {
            "events": [{"timestamp": e.timestamp, "message": e.message, "ingestionTime": e.timestamp} for e in chosen],
            "nextForwardToken": f"f/{after:020d}/s",
            "nextBackwardToken": f"b/{before:020d}/s",
        }

    def FilterLogEvents(self, document: dict[str, Any]) -> dict[str, Any]:
        _, streams = self._group(document)
        names = document.get("logStreamNames")
        prefix = _str(document, "logStreamNamePrefix")
        if names is not None and prefix is not None:
            raise _invalid("logStreamNames and logStreamNamePrefix are mutually exclusive")
        if names is not None:
            if not isinstance(names, list) or not 1 <= len(names) <= 100 or not all(isinstance(n, str) for n in names):
                raise _invalid("logStreamNames must be a list of 1 to 100 names")
            streams = [s for s in streams if s.name in set(names)]
        elif prefix:
            streams = [s for s in streams if s.name.startswith(prefix)]
        limit = _int(document, "limit", 1, MAX_EVENTS, MAX_EVENTS) or MAX_EVENTS
        start, end = _int(document, "startTime", 0, 2**62), _int(document, "endTime", 0, 2**62)
        matches = compile_pattern(_str(document, "filterPattern") or "")
        after = _filter_position(_str(document, "nextToken"))
        found: list[tuple[int, str, int, LogEvent]] = []
        for stream in streams:
            first, last = stream.bounds()
            if first is None or last is None or (start is not None and last.timestamp < start):
                continue
            if end is not None and first.timestamp >= end:
                continue
            for event in stream.events():
                key = (event.timestamp, stream.name, event.seq)
                if _in_time(event, start, end) and (after is None or key > after) and matches(event.message):
                    found.append((*key, event))
        found.sort(key=lambda row: row[:3])
        page = found[:limit]
        size = 0
        for index, row in enumerate(page):
            size += len(row[3].message) + 100
            if size > MAX_RESPONSE_BYTES and index > 0:
                page = page[:index]
                break
        answer: dict[str, Any] = {
            "events": [
                {
                    "logStreamName": name,
                    "timestamp": ts,
                    "message": event.message,
                    "ingestionTime": ts,
                    "eventId": f"{ts:020d}{seq:016d}{hashlib.sha256(name.encode()).hexdigest()[:12]}",
                }
                for ts, name, seq, event in page
            ],
            "searchedLogStreams": [{"logStreamName": s.name, "searchedCompletely": True} for s in streams],
        }
        if len(page) < len(found):
            last_row = page[-1]
            answer["nextToken"] = base64.urlsafe_b64encode(json.dumps(list(last_row[:3])).encode()).decode()
        return answer


def compile_pattern(pattern: str) -> Callable[[str], bool]:
    """CloudWatch's text filter pattern: terms and quoted phrases that must all appear (case-sensitive), ``-term``
    that must not, ``?term`` of which one must; empty matches all. JSON and space-delimited patterns are refused."""
    pattern = pattern.strip()
    if not pattern:
        return lambda _: True
    if pattern.startswith(("{", "[")):
        raise _invalid("JSON and space-delimited filter patterns are not supported; use terms and quoted phrases.")
    terms = _terms(pattern)
    required = [t for t in terms if not t.startswith(("-", "?"))]
    excluded = [t[1:] for t in terms if t.startswith("-") and len(t) > 1]
    optional = [t[1:] for t in terms if t.startswith("?") and len(t) > 1]

    def matches(message: str) -> bool:
        if any(t not in message for t in required) or any(t in message for t in excluded):
            return False
        return not optional or any(t in message for t in optional)

    return matches


def _terms(pattern: str) -> list[str]:
    terms = []
    for found in re.finditer(r'([-?]?)"((?:[^"\\]|\\.)*)"|(\S+)', pattern):
        if found.group(3) is not None:
            terms.append(found.group(3))
        else:
            terms.append(found.group(1) + re.sub(r"\\(.)", r"\1", found.group(2)))
    if pattern.count('"') % 2:
        raise _invalid("The filter pattern has an unterminated quoted phrase.")
    return [t for t in terms if t]


def _filter_position(token: str | None) -> tuple[int, str, int] | None:
    if not token:
        return None
    try:
        ts, name, seq = json.loads(base64.urlsafe_b64decode(token.encode()))
    except (ValueError, TypeError):
        raise _invalid("The specified nextToken is invalid.") from None
    if not (isinstance(ts, int) and isinstance(name, str) and isinstance(seq, int)):
        raise _invalid("The specified nextToken is invalid.")
    return ts, name, seq


def _last_timestamp(stream: Stream) -> int:
    _, last = stream.bounds()
    return last.timestamp if last is not None else 0


def _in_time(event: LogEvent, start: int | None, end: int | None) -> bool:
    return (start is None or event.timestamp >= start) and (end is None or event.timestamp < end)


def _capped(events: list[LogEvent]) -> list[LogEvent]:
    """The longest head of ``events`` within a response's byte budget (at least one event)."""
    size = 0
    for index, event in enumerate(events):
        size += len(event.message) + 26
        if size > MAX_RESPONSE_BYTES and index > 0:
            return events[:index]
    return events


def _capped_tail(events: list[LogEvent]) -> list[LogEvent]:
    return list(reversed(_capped(list(reversed(events)))))


def _page(items: list[Any], document: dict[str, Any], limit: int) -> tuple[list[Any], str | None]:
    token = _str(document, "nextToken")
    start = 0
    if token:
        try:
            start = int(base64.urlsafe_b64decode(token.encode()).decode())
        except (ValueError, TypeError):
            raise _invalid("The specified nextToken is invalid.") from None
        if not 0 <= start <= len(items):
            raise _invalid("The specified nextToken is invalid.")
    end = start + limit
    next_token = base64.urlsafe_b64encode(str(end).encode()).decode() if end < len(items) else None
    return items[start:end], next_token


Operation = Callable[[LogsApi, dict[str, Any]], dict[str, Any]]
OPERATIONS: dict[str, Operation] = {
    name: getattr(LogsApi, name)
    for name in ("DescribeLogGroups", "DescribeLogStreams", "GetLogEvents", "FilterLogEvents")
}


async def logs(request: Request, params: dict[str, str]) -> Response:
    """``POST /`` with a ``Logs_20140328.*`` target: authenticate, parse, answer (file reads off the loop)."""
    request_id = getattr(request.state, "request_id", "")
    target = request.headers.get("x-amz-target", "")
    try:
        operation = OPERATIONS.get(target[len(TARGET_PREFIX) :])
        if operation is None:
            raise LogsError(
                "UnknownOperationException", f"Operation {target[len(TARGET_PREFIX) :][:100]} is not supported"
            )
        body = await read_capped_body(request, MAX_BODY)
        services = request.app.state.services
        await authn.authenticate_sigv4(request, services, hashlib.sha256(body).hexdigest())
        try:
            document = json.loads(body or b"{}")
        except (ValueError, RecursionError):
            raise LogsError("SerializationException", "The request body is not JSON text") from None
        if not isinstance(document, dict):
            raise LogsError("SerializationException", "The request body is not a JSON object")
        api = LogsApi(services.sessions.logs.store, services.settings.region, services.settings.account_id)
        answer = await anyio.to_thread.run_sync(operation, api, document)
        return Response(json.dumps(answer), media_type=CONTENT_TYPE)
    except HangarError as exc:
        return _fail(exc, request_id)


def _fail(exc: HangarError, request_id: str) -> Response:
    response = Response(
        json.dumps({"__type": exc.code, "message": exc.message}), status_code=exc.status, media_type=CONTENT_TYPE
    )
    response.headers["x-amzn-ErrorType"] = exc.code
    response.headers["x-amzn-RequestId"] = request_id
    return response
