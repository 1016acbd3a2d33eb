"""An A2A agent (JSON-RPC on 0.0.0.0:9000 ``/``, card at ``/.well-known/agent-card.json``) to deploy with
``serverProtocol: A2A``, on the official ``a2a-sdk``.

Its card names ``http://localhost:9000/`` (or ``AGENT_URL``): Hangar serves the card with its own URL for the runtime
instead, so clients come back through Hangar. Each message becomes a task that streams one artifact chunk per word
(upper-cased) and completes.
"""

from __future__ import annotations

import asyncio
import os

import uvicorn
from a2a.helpers.proto_helpers import new_task_from_user_message, new_text_message, new_text_part
from a2a.server.agent_execution import AgentExecutor, RequestContext
from a2a.server.events import EventQueue
from a2a.server.request_handlers import DefaultRequestHandler
from a2a.server.routes import create_agent_card_routes, create_jsonrpc_routes
from a2a.server.tasks import InMemoryTaskStore, TaskUpdater
from a2a.types import AgentCapabilities, AgentCard, AgentInterface, AgentSkill
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

PORT = int(os.environ.get("A2A_PORT", "9000"))
URL = os.environ.get("AGENT_URL", f"http://localhost:{PORT}/")
DELAY = float(os.environ.get("WORD_DELAY", "0"))


class Shouter(AgentExecutor):
    """Answers with the words of the message, upper-cased, one artifact chunk per word."""

    async def execute(self, context: RequestContext, event_queue: EventQueue) -> None:
        task = context.current_task
        if task is None:
            assert context.message is not None
            task = new_task_from_user_message(context.message)
            await event_queue.enqueue_event(task)
        updater = TaskUpdater(event_queue, task.id, task.context_id)
        await updater.start_work()
        words = context.get_user_input().split()
        for index, word in enumerate(words):
            await updater.add_artifact(
                [new_text_part(word.upper())],
                artifact_id="shout",
                name="shout",
                append=index > 0,
                last_chunk=index == len(words) - 1,
            )
            if DELAY:
                await asyncio.sleep(DELAY)
        reply = new_text_message(" ".join(words).upper(), context_id=task.context_id, task_id=task.id)
        await updater.complete(reply)

    async def cancel(self, context: RequestContext, event_queue: EventQueue) -> None:
        if context.current_task is not None:
            await TaskUpdater(event_queue, context.current_task.id, context.current_task.context_id).cancel()


CARD = AgentCard(
    name="shouter",
    description="Repeats what it is told, louder.",
    version="1.0.0",
    capabilities=AgentCapabilities(streaming=True),
    skills=[AgentSkill(id="shout", name="shout", description="upper-cases the message", tags=["echo"])],
    default_input_modes=["text"],
    default_output_modes=["text"],
    supported_interfaces=[AgentInterface(protocol_binding="JSONRPC", protocol_version="1.0", url=URL)],
)


async def ping(_request: Request) -> JSONResponse:
    return JSONResponse({"status": "Healthy"})


handler = DefaultRequestHandler(agent_executor=Shouter(), task_store=InMemoryTaskStore(), agent_card=CARD)
app = Starlette(
    routes=[
        Route("/ping", ping),
        *create_agent_card_routes(CARD),
        *create_jsonrpc_routes(request_handler=handler, rpc_url="/", enable_v0_3_compat=True),
    ]
)

if __name__ == "__main__":
    uvicorn.run(app, host="0.0.0.0", port=PORT, log_level="warning")
