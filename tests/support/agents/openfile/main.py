"""Test agent that opens a log file at import (as ``logging.basicConfig(filename=...)`` does) and writes to it."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from hangar.sdk import BedrockAgentCoreApp, RequestContext

LOG_PATH = Path("/tmp/agent.log")
LOG = LOG_PATH.open("a")
LOG.write("imported\n")
LOG.flush()
app = BedrockAgentCoreApp()


@app.entrypoint
def invoke(payload: Any, context: RequestContext) -> dict[str, Any]:
    LOG.write(f"{context.session_id}\n")
    LOG.flush()
    return {"log": LOG_PATH.read_text().split()}


if __name__ == "__main__":
    app.run(port=int(os.environ.get("PORT", "8080")))
