"""Test agent of the cluster tests (hangar.sdk): counts calls per sandbox, or streams events one by one."""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator
from typing import Any

from hangar.sdk import BedrockAgentCoreApp, RequestContext

app = BedrockAgentCoreApp()
calls = {"count": 0}


async def _events(count: int) -> AsyncIterator[dict[str, Any]]:
    for index in range(count):
        yield {"index": index}
        await asyncio.sleep(0.3)  # each event leaves on its own: the node must pass it on before the next


@app.entrypoint
async def invoke(payload: Any, context: RequestContext) -> Any:
    if isinstance(payload, dict) and payload.get("action") == "stream":
        return _events(int(payload.get("count", 3)))
    if isinstance(payload, dict) and payload.get("action") == "size":
        return {"size": len(payload.get("data", ""))}
    if isinstance(payload, dict) and payload.get("say"):
        print(payload["say"], flush=True)  # a line of the session's log (kept on its node)
    calls["count"] += 1
    return {"count": calls["count"], "pid": os.getpid(), "session": context.session_id}


@app.websocket
async def websocket(ws: Any, context: RequestContext) -> None:
    """Echoes text and binary frames until the client closes; "bye" closes from this side with code 4000."""
    await ws.accept()
    while True:
        message = await ws.receive()
        if message["type"] == "websocket.disconnect":
            return
        if message.get("text") == "bye":
            await ws.close(code=4000, reason="bye")
            return
        if message.get("bytes") is not None:
            await ws.send_bytes(message["bytes"][::-1])
        else:
            await ws.send_text(f"{context.session_id}: {message.get('text')}")


if __name__ == "__main__":
    app.run(port=int(os.environ.get("PORT", "8080")))
