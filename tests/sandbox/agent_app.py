"""A tiny agent for sandbox tests: /ping, /invocations (echo), /env; listens on 0.0.0.0:$PORT like a real agent."""

import os

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, StreamingResponse
from starlette.routing import Route


async def ping(request: Request) -> JSONResponse:
    return JSONResponse({"status": "Healthy"})


async def invocations(request: Request) -> JSONResponse:
    return JSONResponse({"echo": (await request.body()).decode()})


async def env(request: Request) -> JSONResponse:
    return JSONResponse({"environ": dict(os.environ), "cwd": os.getcwd(), "uid": os.getuid(), "pid": os.getpid()})


async def peer(request: Request) -> JSONResponse:
    """Who connected: a TCP peer (the supervisor's relay) or none (the sandbox's Unix socket, served directly)."""
    return JSONResponse({"client": None if request.client is None else [request.client.host, request.client.port]})


async def upload(request: Request) -> JSONResponse:
    received = 0
    async for chunk in request.stream():
        received += len(chunk)
    return JSONResponse({"received": received})


async def stream(request: Request) -> StreamingResponse:
    size = int(request.query_params.get("bytes", "1048576"))

    async def chunks():
        sent = 0
        while sent < size:
            part = min(65536, size - sent)
            yield b"x" * part
            sent += part

    return StreamingResponse(chunks(), media_type="application/octet-stream")


app = Starlette(
    routes=[
        Route("/ping", ping),
        Route("/invocations", invocations, methods=["POST"]),
        Route("/env", env),
        Route("/peer", peer),
        Route("/stream", stream),
        Route("/upload", upload, methods=["POST"]),
    ]
)

if __name__ == "__main__":
    uvicorn.run(app, host="0.0.0.0", port=int(os.environ["PORT"]), log_level="warning")
