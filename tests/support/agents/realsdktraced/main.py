"""Test agent on the real ``bedrock-agentcore`` SDK, instrumented the way ADOT instruments it in AWS: Starlette's
OpenTelemetry instrumentation makes the server span from the request's ``traceparent``, and the handler's own span
is its child. Exported over OTLP/HTTP to the runtime environment's OTEL_EXPORTER_OTLP_ENDPOINT."""

from __future__ import annotations

import os
from typing import Any

from bedrock_agentcore import BedrockAgentCoreApp, RequestContext
from opentelemetry import trace
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.instrumentation.starlette import StarletteInstrumentor
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor

provider = TracerProvider(resource=Resource.create({"service.name": "real-sdk-agent"}))
provider.add_span_processor(SimpleSpanProcessor(OTLPSpanExporter()))
trace.set_tracer_provider(provider)
tracer = trace.get_tracer("real-sdk-agent")
app = BedrockAgentCoreApp()
StarletteInstrumentor.instrument_app(app)


@app.entrypoint
async def invoke(payload: dict[str, Any], context: RequestContext) -> dict[str, Any]:
    with tracer.start_as_current_span("realsdk.work"):
        return {"sdk": "bedrock-agentcore", "session": context.session_id}


if __name__ == "__main__":
    app.run(port=int(os.environ.get("PORT", "8080")))  # the process backend gives concurrent sessions their own
