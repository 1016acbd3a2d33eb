"""Test agent (hangar.sdk) instrumented with OpenTelemetry: its own span, exported over OTLP/HTTP to the endpoint
the runtime's environment names (OTEL_EXPORTER_OTLP_ENDPOINT), must join the gateway's trace."""

from __future__ import annotations

import os
from typing import Any

from opentelemetry import trace
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor

from hangar.sdk import BedrockAgentCoreApp, RequestContext

provider = TracerProvider(resource=Resource.create({"service.name": "traced-agent"}))
provider.add_span_processor(SimpleSpanProcessor(OTLPSpanExporter()))  # exported as each span ends
trace.set_tracer_provider(provider)
tracer = trace.get_tracer("traced-agent")
app = BedrockAgentCoreApp()


@app.entrypoint
def invoke(payload: dict[str, Any], context: RequestContext) -> dict[str, Any]:
    with tracer.start_as_current_span("agent.work") as span:
        span.set_attribute("agent.prompt", str(payload.get("prompt", "")))
    headers = context.request.headers  # the raw request: what the gateway sent
    return {"seen": {name: headers.get(name) for name in ("traceparent", "x-amzn-trace-id")}}


@app.websocket
async def chat(websocket: Any, context: RequestContext) -> None:
    """Answers each message with the traceparent the gateway sent for this WebSocket, inside a span of its own."""
    await websocket.accept()
    async for message in websocket.iter_text():
        with tracer.start_as_current_span("agent.ws_message"):
            await websocket.send_text(websocket.headers.get("traceparent", "") + " " + message)


if __name__ == "__main__":
    app.run(port=int(os.environ.get("PORT", "8080")))  # the process backend gives concurrent sessions their own
