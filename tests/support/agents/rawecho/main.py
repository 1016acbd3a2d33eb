"""Test agent without any SDK: plain Starlette that streams the request body straight back (large payloads)."""

from __future__ import annotations

import os
import tempfile
import time
from collections.abc import Iterator

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route, WebSocketRoute
from starlette.websockets import WebSocket, WebSocketDisconnect

STARTED = int(time.time())


async def ping(request: Request) -> JSONResponse:
    return JSONResponse({"status": "Healthy", "time_of_last_update": STARTED})


async def invocations(request: Request) -> Response:
    """Content-Type application/x-headers: answer with the headers received; else send the body back.

    The body is read completely (to a temporary file) before answering, as a request/response agent does.
    """
    content_type = request.headers.get("content-type", "application/json")
    if content_type == "application/x-headers":
        return JSONResponse(dict(request.headers))
    spool = tempfile.TemporaryFile()  # noqa: SIM115 - closed by the response generator
    async for chunk in request.stream():
        spool.write(chunk)
    spool.seek(0)

    def chunks() -> Iterator[bytes]:
        with spool:
            yield from iter(lambda: spool.read(1024 * 1024), b"")

    return StreamingResponse(chunks(), media_type=content_type)


async def card(request: Request) -> JSONResponse:
    return JSONResponse({"name": "rawecho", "url": "http://localhost:9000/", "skills": []})


async def ws(websocket: WebSocket) -> None:
    await websocket.accept(subprotocol=None)
    try:
        while True:
            message = await websocket.receive()
            if message["type"] == "websocket.disconnect":
                return
            if message.get("text", "").startswith("close:"):
                await websocket.close(code=int(message["text"].split(":")[1]), reason="asked to")
                return
            if message.get("text") is not None:
                await websocket.send_text(message["text"])
            elif message.get("bytes") is not None:
                await websocket.send_bytes(message["bytes"])
    except WebSocketDisconnect:
        return


app = Starlette(
    routes=[
        Route("/ping", ping),
        Route("/invocations", invocations, methods=["POST"]),
        Route("/", invocations, methods=["POST"]),
        Route("/mcp", invocations, methods=["POST"]),
        Route("/.well-known/agent-card.json", card),
        WebSocketRoute("/ws", ws),
    ]
)

if __name__ == "__main__":
    uvicorn.run(app, host="0.0.0.0", port=int(os.environ.get("PORT", "8080")), log_level="warning")
