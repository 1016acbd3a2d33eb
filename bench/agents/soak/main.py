"""The soak's agent (hangar.sdk): echo, a short SSE stream and a WebSocket echo, so one runtime takes every load.

``{"stream": N}`` answers N SSE events (at most 200); any other payload is answered back. ``/ws`` echoes text and
binary messages; the text ``close`` ends the conversation with code 1000.
"""

import os

from starlette.websockets import WebSocket, WebSocketDisconnect

from hangar.sdk import BedrockAgentCoreApp

app = BedrockAgentCoreApp()


@app.entrypoint
def invoke(payload):  # type: ignore[no-untyped-def]
    if isinstance(payload, dict) and "stream" in payload:
        count = max(0, min(int(payload["stream"]), 200))
        return ({"i": index} for index in range(count))
    return payload


@app.websocket
async def echo(websocket: WebSocket, context) -> None:  # type: ignore[no-untyped-def]
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


if __name__ == "__main__":
    app.run(port=int(os.environ.get("PORT", "8080")))
