"""WebSocket echo agent: sends back every text or binary message received on ``/ws``.

The text message ``close`` ends the conversation with close code 1000. ``POST /invocations`` also works and
says how to use the socket. Run it with ``python examples/websocket_echo/main.py`` (port 8080, or ``$PORT``).
"""

from __future__ import annotations

import os
from typing import Any

from starlette.websockets import WebSocket, WebSocketDisconnect

from hangar.sdk import BedrockAgentCoreApp, RequestContext

app = BedrockAgentCoreApp()


@app.websocket
async def echo(websocket: WebSocket, context: RequestContext) -> None:
    await websocket.accept()
    try:
        while True:
            message = await websocket.receive()
            if message["type"] == "websocket.disconnect":
                return
            if message.get("text") == "close":
                await websocket.close(code=1000)
                return
            if message.get("text") is not None:
                await websocket.send_text(message["text"])
            elif message.get("bytes") is not None:
                await websocket.send_bytes(message["bytes"])
    except WebSocketDisconnect:
        return


@app.entrypoint
def invoke(payload: Any) -> dict[str, Any]:
    return {"hint": "connect to /ws; every message is echoed, send 'close' to end", "echo": payload}


if __name__ == "__main__":
    app.run(port=int(os.environ.get("PORT", "8080")))
