"""Echo agent: answers every invocation with the payload it received and the session it belongs to.

Run it with ``python examples/echo/main.py`` (port 8080, or ``$PORT``).
"""

from __future__ import annotations

import os
from typing import Any

from hangar.sdk import BedrockAgentCoreApp, RequestContext

app = BedrockAgentCoreApp()


@app.entrypoint
def invoke(payload: Any, context: RequestContext) -> dict[str, Any]:
    return {"echo": payload, "session_id": context.session_id}


if __name__ == "__main__":
    app.run(port=int(os.environ.get("PORT", "8080")))
