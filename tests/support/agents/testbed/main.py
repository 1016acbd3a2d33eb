"""Test agent (hangar.sdk): keeps in-memory state, writes files, fails in chosen ways. Payload picks the action."""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from hangar.sdk import BedrockAgentCoreApp, RequestContext

time.sleep(float(os.environ.get("STARTUP_DELAY", "0")))  # lets tests model an agent that never gets ready
app = BedrockAgentCoreApp()
calls = {"count": 0}


def _die_after(chunks: int) -> Iterator[dict[str, Any]]:
    for index in range(chunks):
        yield {"index": index}
    time.sleep(0.2)  # let the chunks reach the client before the process vanishes
    os._exit(3)


@app.entrypoint
def invoke(payload: Any, context: RequestContext) -> Any:
    action = payload.get("action", "count") if isinstance(payload, dict) else "count"
    if action == "count":
        calls["count"] += 1
        return {
            "count": calls["count"],
            "pid": os.getpid(),
            "session": context.session_id,
            "headers": context.request_headers,
            "version": os.environ.get("AGENT_VERSION"),
        }
    if action == "write":
        (Path(os.environ["HOME"]) / payload["name"]).write_text(payload["text"])
        return {"written": payload["name"]}
    if action == "read":
        path = Path(os.environ["HOME"]) / payload["name"]
        return {"text": path.read_text() if path.exists() else None}
    if action == "stream_then_die":
        return _die_after(int(payload.get("chunks", 3)))
    if action == "exit":
        os._exit(1)
    if action == "sleep":
        time.sleep(float(payload.get("seconds", 1)))
        return {"slept": payload.get("seconds", 1)}
    raise RuntimeError(f"unknown action {action!r}")


if __name__ == "__main__":
    app.run(port=int(os.environ.get("PORT", "8080")))
