"""The handler's span, a child of the gateway's agent-call span, when the agent's environment has OpenTelemetry.

Hangar's gateway sends ``traceparent`` (W3C) and ``X-Amzn-Trace-Id`` with every invocation. When the agent imported
OpenTelemetry (to set up its tracing), each invocation runs inside an ``invoke_agent`` server span parented on that
context, exported by whatever tracer provider the agent set up (none: OpenTelemetry's no-op). Without it, nothing.
"""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Iterator, Mapping
from typing import Any

__all__ = ["handler_span"]


def _opentelemetry() -> tuple[Any, Any] | None:
    """OpenTelemetry's trace API and extract, only when the agent already imported it to set up its tracing.

    Importing it here would cost every agent tens of milliseconds at start, traced or not; an agent that exports
    spans has imported it before its first request.
    """
    if "opentelemetry.trace" not in sys.modules:
        return None
    from opentelemetry import trace
    from opentelemetry.propagate import extract

    return trace, extract


@contextlib.contextmanager
def handler_span(headers: Mapping[str, str], session_id: str | None) -> Iterator[Any]:
    """The current span for the handler's call (None when OpenTelemetry is not installed)."""
    found = _opentelemetry()
    if found is None:
        yield None
        return
    _trace, _extract = found
    parent = _extract(headers)  # the agent's propagators (OTEL_PROPAGATORS; default W3C trace context, baggage)
    tracer = _trace.get_tracer("hangar.sdk")
    attributes = {"gen_ai.operation.name": "invoke_agent"}
    if session_id:
        attributes["session.id"] = session_id
    with tracer.start_as_current_span(
        "invoke_agent", context=parent, kind=_trace.SpanKind.SERVER, attributes=attributes
    ) as span:
        yield span
