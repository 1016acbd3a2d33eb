"""Test agent: answers with the AGENT_LABEL its runtime version was configured with."""

from __future__ import annotations

import os
from typing import Any

from hangar.sdk import BedrockAgentCoreApp, RequestContext

app = BedrockAgentCoreApp()


@app.entrypoint
def invoke(payload: Any, context: RequestContext) -> dict[str, Any]:
    return {"label": os.environ.get("AGENT_LABEL"), "session_id": context.session_id}


if __name__ == "__main__":
    app.run(port=int(os.environ.get("PORT", "8080")))
