"""Test agent that starts a thread at import: a fork would lose it, so its version cannot be templated."""

from __future__ import annotations

import os
import threading
from typing import Any

from hangar.sdk import BedrockAgentCoreApp, RequestContext

beats = threading.Event()
threading.Thread(target=beats.wait, name="heartbeat", daemon=True).start()
app = BedrockAgentCoreApp()


@app.entrypoint
def invoke(payload: Any, context: RequestContext) -> dict[str, Any]:
    return {"threads": [t.name for t in threading.enumerate()], "session": context.session_id}


if __name__ == "__main__":
    app.run(port=int(os.environ.get("PORT", "8080")))
