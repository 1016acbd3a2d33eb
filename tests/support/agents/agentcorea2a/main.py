"""Test agent on ``bedrock_agentcore``'s own A2A helper (``serve_a2a``, which hands its app to ``uvicorn.run``):
each message is answered with how many messages this process has seen (a list made at import)."""

from __future__ import annotations

from a2a.helpers.proto_helpers import new_text_message
from a2a.server.agent_execution import AgentExecutor, RequestContext
from a2a.server.events import EventQueue
from bedrock_agentcore.runtime import serve_a2a

SEEN: list[str] = []


class Counter(AgentExecutor):
    async def execute(self, context: RequestContext, event_queue: EventQueue) -> None:
        SEEN.append(context.get_user_input())
        await event_queue.enqueue_event(new_text_message(f"seen {len(SEEN)}", context_id=context.context_id))

    async def cancel(self, context: RequestContext, event_queue: EventQueue) -> None:
        return None


if __name__ == "__main__":
    serve_a2a(Counter(), host="0.0.0.0")
