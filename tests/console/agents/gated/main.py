"""Console test agent: streams one event, then holds the stream open until a second call releases it.

That lets a browser test see the first event on the page while the answer is provably not finished yet.
"""

from __future__ import annotations

import sys
import threading
from collections.abc import Iterator
from typing import Any

from starlette.websockets import WebSocket, WebSocketDisconnect

from hangar.sdk import BedrockAgentCoreApp

app = BedrockAgentCoreApp()
released = threading.Event()


def gated(prompt: str) -> Iterator[dict[str, Any]]:
    yield {"index": 0, "text": f"{prompt}: first"}
    held = released.wait(120)
    released.clear()
    yield {"index": 1, "text": f"{prompt}: second", "released": held}
    yield {"done": True}


@app.entrypoint
def invoke(payload: Any) -> Any:
    payload = payload if isinstance(payload, dict) else {}
    if payload.get("action") == "release":
        print("releasing the stream", file=sys.stderr, flush=True)
        released.set()
        return {"released": True}
    if payload.get("action") == "stream":
        print(f"streaming for {payload.get('prompt', '')}", flush=True)
        return gated(str(payload.get("prompt", "")))
    print(f"echo {payload}", flush=True)
    return {"echo": payload}


@app.websocket
async def chat(websocket: WebSocket, context: Any) -> None:
    await websocket.accept()
    try:
        while True:
            text = await websocket.receive_text()
            await websocket.send_text(f"echo: {text}")
    except WebSocketDisconnect:
        return


if __name__ == "__main__":
    app.run()
