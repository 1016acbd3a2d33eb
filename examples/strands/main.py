"""A Strands agent with a tool, streamed back as Server-Sent Events.

The model is chosen by environment variables: ``MODEL_PROVIDER`` (``openai`` by default: any OpenAI-compatible
server at ``OPENAI_BASE_URL`` with ``OPENAI_API_KEY``; or ``bedrock``, ``anthropic``, ``gemini``) and ``MODEL_ID``;
``MAX_TOKENS`` caps each answer, ``TEMPERATURE`` (0.7) sets sampling.

Payload ``{"prompt": "..."}``. The first model turn must call the ``add`` tool (small local models rarely choose a
tool on their own); after the tool's answer the model writes the reply: ``{"tool_call": ...}``,
``{"tool_result": ...}``, ``{"token": ...}``..., ``{"done": true, "answer": ...}``.
"""

from __future__ import annotations

import os
from collections.abc import AsyncGenerator, AsyncIterator
from typing import Any

from strands import Agent, tool

from hangar.sdk import BedrockAgentCoreApp

MAX_TOKENS = int(os.environ.get("MAX_TOKENS", "32"))
TOOL = "add"
PARAMS = {"max_tokens": MAX_TOKENS, "temperature": float(os.environ.get("TEMPERATURE", "0.7"))}


@tool
def add(a: int, b: int) -> int:
    """Add two integers."""
    return a + b


def _answered(messages: list[Any]) -> bool:
    return any("toolResult" in block for message in messages for block in message.get("content", []))


def chat_model() -> Any:
    """The model named by the environment; an OpenAI-compatible one must call the tool on its first turn."""
    provider = os.environ.get("MODEL_PROVIDER", "openai")
    model_id = os.environ.get("MODEL_ID", "local")
    if provider == "openai":
        from strands.models.openai import OpenAIModel

        class FirstTurnTool(OpenAIModel):
            @classmethod
            def format_request_messages(cls, *args: Any, **kwargs: Any) -> list[dict[str, Any]]:
                """Every message with a content, blank for a turn that only called tools: some OpenAI-compatible
                servers (llama.cpp's Python server) cannot render an assistant message without one."""
                messages = super().format_request_messages(*args, **kwargs)
                return [m if "content" in m else {**m, "content": ""} for m in messages]

            async def stream(  # type: ignore[override]
                self, messages: Any, tool_specs: Any = None, system_prompt: Any = None, **kwargs: Any
            ) -> AsyncGenerator[Any, None]:
                if _answered(messages):
                    tool_specs = None  # the tool has answered: now write the reply
                else:
                    kwargs["tool_choice"] = {"tool": {"name": TOOL}}
                async for event in super().stream(messages, tool_specs, system_prompt, **kwargs):
                    yield event

        client = {"base_url": os.environ.get("OPENAI_BASE_URL"), "api_key": os.environ.get("OPENAI_API_KEY", "none")}
        return FirstTurnTool(client_args=client, model_id=model_id, params=PARAMS)
    if provider == "bedrock":
        from strands.models import BedrockModel

        return BedrockModel(model_id=model_id, max_tokens=MAX_TOKENS)
    if provider == "anthropic":
        from strands.models.anthropic import AnthropicModel

        return AnthropicModel(model_id=model_id, max_tokens=MAX_TOKENS)
    if provider == "gemini":
        from strands.models.gemini import GeminiModel

        return GeminiModel(model_id=model_id, params={"max_output_tokens": MAX_TOKENS})
    raise ValueError(f"MODEL_PROVIDER must be openai, bedrock, anthropic or gemini, not {provider!r}")


MODEL = chat_model()
app = BedrockAgentCoreApp()


@app.entrypoint
async def invoke(payload: Any) -> AsyncIterator[dict[str, Any]]:
    prompt = str(payload.get("prompt", "hello")) if isinstance(payload, dict) else "hello"
    agent = Agent(model=MODEL, tools=[add], callback_handler=None)  # one conversation per invocation
    async for event in agent.stream_async(prompt):
        if "data" in event:
            yield {"token": event["data"]}
        elif "message" in event:
            for block in event["message"].get("content", []):
                if "toolUse" in block:
                    yield {"tool_call": block["toolUse"]["name"], "args": block["toolUse"]["input"]}
                elif "toolResult" in block:
                    text = "".join(part.get("text", "") for part in block["toolResult"]["content"])
                    yield {"tool_result": text}
        elif "result" in event:
            yield {"done": True, "answer": str(event["result"]).strip()}


if __name__ == "__main__":
    app.run(port=int(os.environ.get("PORT", "8080")))
