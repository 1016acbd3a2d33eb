"""Bench agent: a FastAPI app served as AgentCore's bidirectional-streaming tutorial serves it, from async code
(``asyncio.run(main())`` awaiting ``uvicorn.Server(config).serve()``); ``/invocations`` echoes, ``/ws`` echoes."""

import asyncio
import os

import uvicorn
from fastapi import FastAPI, WebSocket, WebSocketDisconnect

app = FastAPI()


@app.get("/ping")
async def ping() -> dict[str, str]:
    return {"status": "Healthy"}


@app.post("/invocations")
async def invocations(payload: dict) -> dict:  # type: ignore[type-arg]
    return payload


@app.websocket("/ws")
async def echo(websocket: WebSocket) -> None:
    await websocket.accept()
    try:
        while True:
            await websocket.send_text(await websocket.receive_text())
    except WebSocketDisconnect:
        return


async def main() -> None:
    config = uvicorn.Config(app, host="0.0.0.0", port=int(os.environ.get("PORT", "8080")), log_level="warning")
    await uvicorn.Server(config).serve()


if __name__ == "__main__":
    asyncio.run(main())
