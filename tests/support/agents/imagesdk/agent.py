"""An agent image's program on the real ``bedrock-agentcore`` SDK: state per session, SSE, a WebSocket echo.

``AGENT_VERSION`` comes from the image's Env (the e2e test builds version 1 and 2 of the image)."""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator

from bedrock_agentcore import BedrockAgentCoreApp, RequestContext

app = BedrockAgentCoreApp()
turns: list[str] = []


def words(prompt: str) -> Iterator[dict]:
    for word in prompt.split():
        yield {"word": word}


@app.entrypoint
def invoke(payload: dict, context: RequestContext) -> object:
    if payload.get("stream"):
        return words(str(payload.get("prompt", "")))
    turns.append(str(payload.get("prompt")))
    return {
        "version": os.environ.get("AGENT_VERSION"),
        "python": sys.executable,
        "cwd": os.getcwd(),
        "uid": os.getuid(),
        "session": context.session_id,
        "turns": turns,
    }


@app.websocket
async def echo(websocket, context) -> None:  # type: ignore[no-untyped-def]
    await websocket.accept()
    text = await websocket.receive_text()
    await websocket.send_text(f"image says {text}")
    await websocket.close()


if __name__ == "__main__":
    app.run()
