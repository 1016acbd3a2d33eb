"""A contract-only agent (Starlette, no SDK) so proxy costs are measured without SDK work.

POST /invocations with ``{"stream": N}`` answers N SSE events; any other body is streamed back unchanged.
"""

import json
import os
import tempfile
import time

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, StreamingResponse
from starlette.routing import Route

STARTED = int(time.time())


async def ping(_request: Request) -> JSONResponse:
    return JSONResponse({"status": "Healthy", "time_of_last_update": STARTED})


async def invocations(request: Request) -> StreamingResponse:
    """The whole body is read (spooled to /tmp) before answering, as a request/response agent does."""
    spool = tempfile.TemporaryFile()  # noqa: SIM115 - closed by the response generator
    async for chunk in request.stream():
        spool.write(chunk)
    spool.seek(0)
    head = spool.read(64)
    spool.seek(0)
    if head.startswith(b'{"stream"'):
        count = int(json.loads(spool.read())["stream"])
        spool.close()

        async def events():  # type: ignore[no-untyped-def]
            for index in range(count):
                yield f'data: {{"i": {index}}}\n\n'.encode()

        return StreamingResponse(events(), media_type="text/event-stream")

    def echo():  # type: ignore[no-untyped-def]
        with spool:
            yield from iter(lambda: spool.read(1 << 20), b"")

    return StreamingResponse(echo(), media_type="application/octet-stream")


app = Starlette(routes=[Route("/ping", ping), Route("/invocations", invocations, methods=["POST"])])

if __name__ == "__main__":
    host = "0.0.0.0" if os.environ.get("HANGAR_SANDBOX") else "127.0.0.1"
    uvicorn.run(app, host=host, port=int(os.environ.get("PORT", "8080")), log_level="warning")
