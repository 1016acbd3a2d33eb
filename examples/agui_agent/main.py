"""An AG-UI agent (``serverProtocol: AGUI``: 0.0.0.0:8080 ``POST /invocations`` as SSE, ``/ws`` as text frames),
built on the official ``ag-ui-protocol`` package, as AgentCore's AG-UI contract describes.

Each run: RUN_STARTED, a STATE_SNAPSHOT (turns of this thread so far), a ``word_count`` tool call (start, args,
end, result), the reply as a text message streamed word by word, RUN_FINISHED. A failure mid-run is a RUN_ERROR.
"""

from __future__ import annotations

import asyncio
import json
import os
import uuid
from collections.abc import AsyncIterator

import uvicorn
from ag_ui.core import (
    BaseEvent,
    RunAgentInput,
    RunErrorEvent,
    RunFinishedEvent,
    RunStartedEvent,
    StateSnapshotEvent,
    TextMessageContentEvent,
    TextMessageEndEvent,
    TextMessageStartEvent,
    ToolCallArgsEvent,
    ToolCallEndEvent,
    ToolCallResultEvent,
    ToolCallStartEvent,
)
from ag_ui.encoder import EventEncoder
from pydantic import ValidationError
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route, WebSocketRoute
from starlette.websockets import WebSocket, WebSocketDisconnect

DELAY = float(os.environ.get("WORD_DELAY", "0"))
TURNS: dict[str, int] = {}  # per thread, in this session's memory


def _last_user_text(run: RunAgentInput) -> str:
    for message in reversed(run.messages):
        if message.role == "user":
            content = message.content
            return content if isinstance(content, str) else " ".join(getattr(p, "text", "") for p in content)
    return ""


async def run_agent(run: RunAgentInput) -> AsyncIterator[BaseEvent]:
    yield RunStartedEvent(thread_id=run.thread_id, run_id=run.run_id)
    text = _last_user_text(run)
    TURNS[run.thread_id] = TURNS.get(run.thread_id, 0) + 1
    yield StateSnapshotEvent(snapshot={"turns": TURNS[run.thread_id], "last": text})
    call_id = str(uuid.uuid4())
    yield ToolCallStartEvent(tool_call_id=call_id, tool_call_name="word_count")
    yield ToolCallArgsEvent(tool_call_id=call_id, delta=json.dumps({"text": text}))
    yield ToolCallEndEvent(tool_call_id=call_id)
    words = text.split()
    yield ToolCallResultEvent(message_id=str(uuid.uuid4()), tool_call_id=call_id, content=str(len(words)))
    message_id = str(uuid.uuid4())
    yield TextMessageStartEvent(message_id=message_id, role="assistant")
    for index, word in enumerate(reversed(words)):
        yield TextMessageContentEvent(message_id=message_id, delta=(" " if index else "") + word)
        if DELAY:
            await asyncio.sleep(DELAY)
    yield TextMessageEndEvent(message_id=message_id)
    yield RunFinishedEvent(thread_id=run.thread_id, run_id=run.run_id)


async def _guarded(run: RunAgentInput) -> AsyncIterator[BaseEvent]:
    try:
        async for event in run_agent(run):
            yield event
    except Exception as exc:  # the stream has started: the error travels as an event
        yield RunErrorEvent(message=str(exc), code="INTERNAL_ERROR")


async def invocations(request: Request) -> Response:
    try:
        run = RunAgentInput.model_validate(await request.json())
    except (ValueError, ValidationError) as exc:
        return JSONResponse({"error": f"Invalid RunAgentInput: {exc}"}, status_code=400)
    encoder = EventEncoder(accept=request.headers.get("accept"))

    async def frames() -> AsyncIterator[str]:
        async for event in _guarded(run):
            yield encoder.encode(event)

    return StreamingResponse(frames(), media_type=encoder.get_content_type())


async def ws(websocket: WebSocket) -> None:
    await websocket.accept()
    try:
        run = RunAgentInput.model_validate(await websocket.receive_json())
    except (ValueError, ValidationError) as exc:
        await websocket.close(code=1003, reason=f"Invalid RunAgentInput: {type(exc).__name__}")
        return
    except WebSocketDisconnect:
        return
    encoder = EventEncoder()
    try:
        async for event in _guarded(run):
            await websocket.send_text(encoder.encode(event))
    except WebSocketDisconnect:
        return
    await websocket.close()


async def ping(_request: Request) -> JSONResponse:
    return JSONResponse({"status": "Healthy"})


app = Starlette(
    routes=[Route("/ping", ping), Route("/invocations", invocations, methods=["POST"]), WebSocketRoute("/ws", ws)]
)

if __name__ == "__main__":
    uvicorn.run(app, host="0.0.0.0", port=int(os.environ.get("PORT", "8080")), log_level="warning")
