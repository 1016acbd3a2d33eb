"""Test agent started as AgentCore's bidirectional-streaming tutorial does: a FastAPI app served by
``asyncio.run(main())`` awaiting ``uvicorn.Server(config).serve()``, with a WebSocket echo on ``/ws``.

Module-level ``asyncio.run(setup())`` is set-up (it returns): it runs once, in the warm template. ``IMPORTED`` is made
at import; each session must see its own copy (``/invocations`` appends to it and reports what it holds).
"""

from __future__ import annotations

import asyncio
import os
import threading
import uuid
from typing import Any

import uvicorn
from fastapi import FastAPI, WebSocket, WebSocketDisconnect

IMPORTED: dict[str, Any] = {"token": uuid.uuid4().hex, "pid": os.getpid(), "hits": []}


async def setup() -> str:
    await asyncio.sleep(0)
    return "set up"


IMPORTED["setup"] = asyncio.run(setup())  # a loop entered and left at import: not where the agent serves
app = FastAPI()


@app.get("/ping")
async def ping() -> dict[str, str]:
    return {"status": "Healthy"}


@app.post("/invocations")
async def invocations(payload: dict[str, Any]) -> dict[str, Any]:
    IMPORTED["hits"].append(payload.get("prompt", ""))
    return {
        **IMPORTED,
        "servedBy": os.getpid(),
        "threads": sorted(t.name for t in threading.enumerate()),
    }


@app.websocket("/ws")
async def echo(websocket: WebSocket) -> None:
    await websocket.accept()
    try:
        while True:
            await websocket.send_text(f"echo: {await websocket.receive_text()}")
    except WebSocketDisconnect:
        return


async def main() -> None:
    config = uvicorn.Config(app, host="0.0.0.0", port=int(os.environ.get("PORT", "8080")), log_level="warning")
    await uvicorn.Server(config).serve()


if __name__ == "__main__":
    asyncio.run(main())
