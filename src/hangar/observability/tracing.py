"""OpenTelemetry traces of data-plane calls, exported over OTLP/HTTP, and the trace context handed to the agent.

One server span per call (HTTP semantic conventions plus the runtime, session and qualifier), children for
authentication, version resolution, the session start (``hangar.session.start``, its ``start_kind``; its phases
as children: ``session_phases``/``phase``), the agent call (a client span, GenAI ``invoke_agent``) and the
streamed answer. The agent-call span's context reaches the agent as W3C
``traceparent`` and AWS ``X-Amzn-Trace-Id``, so an instrumented agent's spans join the trace; a client's
``traceparent`` (else ``X-Amzn-Trace-Id``) becomes the server span's parent.

Nothing configured (no endpoint), nothing runs: ``begin`` returns ``NO_TRACE`` whose methods do nothing, so an
installation without a collector pays one attribute lookup per call, and a session start one context-variable read
per phase.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import re
from collections.abc import Awaitable, Callable, Iterator
from contextvars import ContextVar
from typing import TYPE_CHECKING, Any

from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.trace import NonRecordingSpan, Span, SpanContext, SpanKind, Status, StatusCode, TraceFlags
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator
from starlette.requests import HTTPConnection

if TYPE_CHECKING:
    from opentelemetry.sdk.trace import TracerProvider

    from hangar.config import Settings
    from hangar.domain.invocation import InvocationTarget
    from hangar.sessions.manager import SessionManager
    from hangar.sessions.session import Session

log = logging.getLogger("hangar.tracing")

AWS_TRACE_HEADER = "x-amzn-trace-id"
_REPLACED = frozenset({"traceparent", "tracestate", AWS_TRACE_HEADER})
_W3C = TraceContextTextMapPropagator()
_HEX = re.compile(r"^[0-9a-f]+$")
_SCOPE_KEY = "hangar.trace"
OnEnd = Callable[[bool], Awaitable[None]]


class Tracing:
    """The installation's tracer provider (a ``services.Component``: stopping flushes what is still batched)."""

    def __init__(self, provider: TracerProvider | None) -> None:
        self.provider = provider
        self.tracer = provider.get_tracer("hangar") if provider is not None else None

    async def start(self) -> None:
        return None

    async def stop(self) -> None:
        if self.provider is not None:
            await asyncio.to_thread(self.provider.shutdown)  # flushes the batch processor


def build_tracing(settings: Settings) -> Tracing:
    """An OTLP/HTTP exporter when an endpoint is configured (``otlp_endpoint``, else the standard
    ``OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`` / ``OTEL_EXPORTER_OTLP_ENDPOINT``), else no tracing at all."""
    env_endpoint = os.environ.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT") or os.environ.get("OTEL_EXPORTER_OTLP_ENDPOINT")
    disabled = os.environ.get("OTEL_SDK_DISABLED", "").lower() == "true"
    if disabled or not (settings.otlp_endpoint or env_endpoint):
        return Tracing(None)
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
    from opentelemetry.sdk.resources import SERVICE_NAME, Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

    # The exporter reads the remaining OTEL_EXPORTER_OTLP_* variables (headers, timeout, compression, certificate).
    endpoint = f"{settings.otlp_endpoint.rstrip('/')}/v1/traces" if settings.otlp_endpoint else None
    resource = Resource.create({SERVICE_NAME: settings.otlp_service_name})
    provider = TracerProvider(resource=resource)  # the sampler follows OTEL_TRACES_SAMPLER (default: parent-based)
    provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter(endpoint=endpoint)))
    log.info("exporting traces over OTLP/HTTP to %s", endpoint or env_endpoint)
    return Tracing(provider)


def incoming_context(headers: dict[str, str]) -> Context | None:
    """The caller's trace context: ``traceparent`` (W3C) first, else the span named by ``X-Amzn-Trace-Id``."""
    if "traceparent" in headers:
        context = _W3C.extract(headers)
        if trace.get_current_span(context).get_span_context().is_valid:
            return context
    amzn = headers.get(AWS_TRACE_HEADER)
    parent = parse_amzn_trace_id(amzn) if amzn else None
    return trace.set_span_in_context(NonRecordingSpan(parent)) if parent is not None else None


def parse_amzn_trace_id(value: str) -> SpanContext | None:
    """``Root=1-<8 hex>-<24 hex>;Parent=<16 hex>;Sampled=0|1`` → a remote span context (None without a Parent)."""
    fields = dict(part.strip().partition("=")[::2] for part in value.split(";") if "=" in part)
    root, parent = fields.get("Root", "").lower(), fields.get("Parent", "").lower()
    pieces = root.split("-")
    if len(pieces) != 3 or pieces[0] != "1" or len(pieces[1]) != 8 or len(pieces[2]) != 24 or len(parent) != 16:
        return None
    trace_hex = pieces[1] + pieces[2]
    if not (_HEX.match(trace_hex) and _HEX.match(parent)):
        return None
    flags = TraceFlags(TraceFlags.SAMPLED if fields.get("Sampled", "1") == "1" else TraceFlags.DEFAULT)
    context = SpanContext(int(trace_hex, 16), int(parent, 16), is_remote=True, trace_flags=flags)
    return context if context.is_valid else None


def amzn_trace_id(context: SpanContext) -> str:
    """The AWS form of a span context (what X-Ray and the AgentCore SDK read)."""
    trace_hex = f"{context.trace_id:032x}"
    sampled = "1" if context.trace_flags.sampled else "0"
    return f"Root=1-{trace_hex[:8]}-{trace_hex[8:]};Parent={context.span_id:016x};Sampled={sampled}"


class Invocation:
    """The spans of one data-plane call; every child is parented explicitly on the server span (streams end in
    other tasks, so the ambient context is never relied on)."""

    def __init__(self, tracer: trace.Tracer, conn: HTTPConnection, route: str) -> None:
        self.tracer = tracer
        method = "GET" if conn.scope["type"] == "websocket" else conn.scope.get("method", "GET")
        url = conn.url
        attributes: dict[str, str | int] = {
            "http.request.method": method,
            "http.route": route,
            "url.path": url.path,
            "url.scheme": url.scheme,
            "server.address": url.hostname or "",
            "gen_ai.operation.name": "invoke_agent",
        }
        if url.port is not None:
            attributes["server.port"] = url.port
        if conn.client is not None:
            attributes["client.address"] = conn.client.host
        if agent := conn.headers.get("user-agent"):
            attributes["user_agent.original"] = agent
        parent = incoming_context(dict(conn.headers))
        self.server = tracer.start_span(f"{method} {route}", parent, SpanKind.SERVER, attributes)
        self.context = trace.set_span_in_context(self.server)
        self.open: list[Span] = []
        self.steps: list[Span] = []
        self.call_span: Span | None = None
        self.reused = False
        self.ended = False

    def child(self, name: str, kind: SpanKind = SpanKind.INTERNAL, parent: Span | None = None) -> Span:
        context = self.context if parent is None else trace.set_span_in_context(parent)
        span = self.tracer.start_span(name, context, kind)
        self.open.append(span)
        return span

    def end_child(self, span: Span, error: BaseException | None = None) -> None:
        if span in self.open:
            self.open.remove(span)
            _record(span, error)
            span.end()

    def step(self, name: str) -> contextlib.AbstractContextManager[Span]:
        return self._step(name)

    @contextlib.contextmanager
    def _step(self, name: str) -> Iterator[Span]:
        """A child of the step this one runs in (authentication resolves the version inside it), else of the call."""
        span = self.child(name, parent=self.steps[-1] if self.steps else None)
        self.steps.append(span)
        try:
            yield span
        except BaseException as exc:
            self.end_child(span, exc)
            raise
        finally:
            self.steps.remove(span)
        self.end_child(span)

    def target(self, target: InvocationTarget, session_id: str) -> None:
        """What the call resolved to, on the server span (AgentCore and GenAI attributes)."""
        self.server.set_attributes(
            {
                "aws.agentcore.runtime_arn": target.runtime_arn,
                "aws.agentcore.runtime_id": target.runtime_id,
                "aws.agentcore.runtime_version": target.version,
                "aws.agentcore.qualifier": target.endpoint_name,
                "aws.agentcore.runtime_session_id": session_id,
                "session.id": session_id,
                "gen_ai.agent.id": target.runtime_id,
                "gen_ai.agent.name": target.runtime_name,
                "hangar.protocol": target.protocol,
            }
        )

    def session_start(self, manager: SessionManager, target: InvocationTarget, session_id: str) -> Span:
        """Start the session-start span (call before getting or starting the session, then ``session_ready``); a
        start this call begins (a task created from here) hangs its phases under it (``session_phases``)."""
        span = self.child("hangar.session.start")
        self.reused = manager.get(target.runtime_id, session_id) is not None
        _STARTING.set(_Phases(self.tracer, span))
        return span

    def session_ready(self, span: Span, session: Session) -> None:
        """``start_kind``: warm (the session was already running), spare (a warm-pool sandbox), fork, cold."""
        _STARTING.set(None)
        kind = "warm" if self.reused else {"warm": "spare"}.get(session.start_kind, session.start_kind)
        span.set_attribute("hangar.session.start_kind", kind)
        span.set_attribute("hangar.sandbox.id", session.sandbox_id)
        if not self.reused and session.cold_reason:
            span.set_attribute("hangar.session.cold_reason", session.cold_reason)
        if kind == "spare" and session.spare_kind:  # how the spare itself was made (fork, cold)
            span.set_attribute("hangar.session.spare_kind", session.spare_kind)
        self.end_child(span)

    def agent_call(self, headers: list[tuple[str, str]], target: InvocationTarget) -> list[tuple[str, str]]:
        """Start the agent-call span; ``headers`` (to the agent) carry its context instead of the caller's."""
        span = self.child(f"invoke_agent {target.runtime_name}", SpanKind.CLIENT)
        span.set_attributes(
            {
                "gen_ai.operation.name": "invoke_agent",
                "gen_ai.agent.id": target.runtime_id,
                "gen_ai.agent.name": target.runtime_name,
            }
        )
        self.call_span = span
        out = [(name, value) for name, value in headers if name.lower() not in _REPLACED]
        carrier: dict[str, str] = {}
        _W3C.inject(carrier, trace.set_span_in_context(span))
        out += list(carrier.items())
        out.append(("X-Amzn-Trace-Id", amzn_trace_id(span.get_span_context())))
        return out

    def streaming(self, status: int) -> Span:
        self.server.set_attribute("http.response.status_code", status)
        if self.call_span is not None:
            self.call_span.set_attribute("http.response.status_code", status)
        return self.child("hangar.stream")

    def on_end(self, inner: OnEnd) -> OnEnd:
        """Wraps a ``StreamedResponse`` ``on_end``: every span ends when the stream does."""

        async def ended(completed: bool) -> None:
            try:
                await inner(completed)
            finally:
                self.end(None if completed else ConnectionError("the stream from the agent broke"))

        return ended

    def end(self, error: BaseException | None = None) -> None:
        """End the call's spans (idempotent); ``error`` marks them failed (the server span only for a 5xx)."""
        if self.ended:
            return
        self.ended = True
        _STARTING.set(None)  # a start that failed: nothing more hangs under its span from this task
        for span in reversed(self.open):
            _record(span, error)
            span.end()
        self.open.clear()
        status = getattr(error, "status", None) if error is not None else None
        if isinstance(status, int):
            self.server.set_attribute("http.response.status_code", status)
        _record(self.server, error if status is None or status >= 500 else None)
        if error is not None:
            self.server.set_attribute("error.type", getattr(error, "code", type(error).__name__))
        self.server.end()


class _NoTrace(Invocation):
    """Tracing off: the same calls, no work."""

    def __init__(self) -> None:  # no spans at all
        self.open = []
        self.steps = []
        self.call_span = None
        self.reused = False
        self.ended = True

    def child(self, name: str, kind: SpanKind = SpanKind.INTERNAL, parent: Span | None = None) -> Span:
        return trace.INVALID_SPAN

    def end_child(self, span: Span, error: BaseException | None = None) -> None:
        return None

    def step(self, name: str) -> contextlib.AbstractContextManager[Span]:
        return _NO_STEP

    def target(self, target: InvocationTarget, session_id: str) -> None:
        return None

    def session_start(self, manager: SessionManager, target: InvocationTarget, session_id: str) -> Span:
        return trace.INVALID_SPAN

    def session_ready(self, span: Span, session: Session) -> None:
        return None

    def agent_call(self, headers: list[tuple[str, str]], target: InvocationTarget) -> list[tuple[str, str]]:
        return headers  # the caller's trace headers pass unchanged (common.agent_headers)

    def streaming(self, status: int) -> Span:
        return trace.INVALID_SPAN

    def on_end(self, inner: OnEnd) -> OnEnd:
        return inner

    def end(self, error: BaseException | None = None) -> None:
        return None


_NO_STEP = contextlib.nullcontext(trace.INVALID_SPAN)  # reusable: nullcontext keeps no state
NO_TRACE = _NoTrace()


class _Phases:
    """The ``hangar.session.start`` span a start's phases hang under, and the one task that runs that start: tasks
    the start spawns (warm-pool refills, templates) copy the context, never the span (``owner`` tells them apart)."""

    __slots__ = ("claimed", "open", "owner", "span", "tracer")

    def __init__(self, tracer: trace.Tracer, span: Span) -> None:
        self.tracer = tracer
        self.span = span
        self.owner: asyncio.Task[Any] | None = None
        self.claimed = False
        self.open: list[Span] = []  # phases running now: a phase inside another (a backend's steps) is its child

    @contextlib.contextmanager
    def owned(self) -> Iterator[Span]:
        self.claimed = True
        self.owner = asyncio.current_task()
        try:
            yield self.span
        finally:
            self.owner = None  # the start is over: a phase run later (a refill's) is not this start's

    @contextlib.contextmanager
    def child(self, name: str) -> Iterator[Span]:
        span = self.tracer.start_span(name, trace.set_span_in_context(self.open[-1] if self.open else self.span))
        self.open.append(span)
        try:
            yield span
        except BaseException as exc:
            _record(span, exc)
            raise
        finally:
            self.open.remove(span)
            span.end()


# The session start of the invocation running in this context (None: tracing off, or no invocation is starting one).
_STARTING: ContextVar[_Phases | None] = ContextVar("hangar_session_start", default=None)


def session_phases() -> contextlib.AbstractContextManager[Span]:
    """Around the work of one session start, in the task that runs it (``SessionManager._start``): the ``phase``s
    it runs become children of the ``hangar.session.start`` span of the invocation that began it. Tracing off, or a
    start begun by no traced invocation (a warm-pool refill): a shared no-op."""
    phases = _STARTING.get()
    if phases is None or phases.claimed:
        return _NO_STEP
    return phases.owned()


def phase(name: str) -> contextlib.AbstractContextManager[Span]:
    """One phase of a session start (fork, launch, wait ready), as a child span of its ``hangar.session.start``, or
    of the phase it runs in (a sandbox backend's steps); a no-op outside a traced start's own task."""
    phases = _STARTING.get()
    if phases is None or phases.owner is None or phases.owner is not asyncio.current_task():
        return _NO_STEP
    return phases.child(name)


def begin(conn: HTTPConnection, route: str) -> Invocation:
    """Start the server span of this call (``NO_TRACE`` when tracing is off); ``of(conn)`` finds it later."""
    tracing: Tracing | None = getattr(conn.app.state.services, "tracing", None)
    if tracing is None or tracing.tracer is None:
        return NO_TRACE
    invocation = Invocation(tracing.tracer, conn, route)
    conn.scope[_SCOPE_KEY] = invocation
    return invocation


def of(conn: HTTPConnection) -> Invocation:
    """This call's spans, or ``NO_TRACE`` (tracing off, or a route without a server span)."""
    found: Invocation = conn.scope.get(_SCOPE_KEY, NO_TRACE)  # not conn.state: its misses cost an exception
    return found


def _record(span: Span, error: BaseException | None) -> None:
    if error is None:
        return
    if not isinstance(error, asyncio.CancelledError):
        span.record_exception(error)
    span.set_status(Status(StatusCode.ERROR, f"{type(error).__name__}: {error}"[:200]))
