"""The handler's span, a child of the gateway's agent-call span, when the agent's environment has OpenTelemetry.

Hangar's gateway sends ``traceparent`` (W3C) and ``X-Amzn-Trace-Id`` with every invocation. With
``opentelemetry-api`` installed, each invocation runs inside an ``invoke_agent`` server span parented on that
context, exported by whatever tracer provider the agent set up (none: OpenTelemetry's no-op). Without it, nothing.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping
from typing import Any

try:  # optional: the SDK itself needs only the standard library, Starlette and uvicorn
    from opentelemetry import trace as _trace
    from opentelemetry.propagate import extract as _extract

    TRACING = True
except ImportError:  # pragma: no cover - depends on the agent's environment
    TRACING = False


@contextlib.contextmanager
def handler_span(headers: Mapping[str, str], session_id: str | None) -> Iterator[Any]:
    """The current span for the handler's call (None when OpenTelemetry is not installed)."""
    if not TRACING:
        yield None
        return
    parent = _extract(headers)  # the agent's propagators (OTEL_PROPAGATORS; default W3C trace context, baggage)
    tracer = _trace.get_tracer("hangar.sdk")
    attributes = {"gen_ai.operation.name": "invoke_agent"}
    if session_id:
        attributes["session.id"] = session_id
    with tracer.start_as_current_span(
        "invoke_agent", context=parent, kind=_trace.SpanKind.SERVER, attributes=attributes
    ) as span:
        yield span
