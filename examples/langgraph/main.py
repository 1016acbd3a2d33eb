"""A LangGraph agent: a graph with a model node and a tool node, streamed back as Server-Sent Events.

The model is chosen by environment variables: ``MODEL_PROVIDER`` (``openai`` by default: any OpenAI-compatible
server at ``OPENAI_BASE_URL`` with ``OPENAI_API_KEY``; or ``bedrock``, ``anthropic``, ``gemini`` with that
provider's package, see requirements.txt, and its usual credentials) and ``MODEL_ID``. ``MAX_TOKENS`` caps each
answer, ``TEMPERATURE`` (0.7) sets sampling.

Payload ``{"prompt": "..."}``. The first model turn must call the ``add`` tool (small local models rarely choose a
tool on their own); after the tool's answer the model writes the reply, streamed token by token:
``{"tool_call": ...}``, ``{"tool_result": ...}``, ``{"token": ...}``..., ``{"done": true, "answer": ...}``.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from typing import Any

from langchain_core.messages import AIMessage, AIMessageChunk, HumanMessage, ToolMessage
from langchain_core.tools import tool
from langgraph.graph import END, START, MessagesState, StateGraph
from langgraph.prebuilt import ToolNode

from hangar.sdk import BedrockAgentCoreApp

MAX_TOKENS = int(os.environ.get("MAX_TOKENS", "32"))


@tool
def add(a: int, b: int) -> int:
    """Add two integers."""
    return a + b


def chat_model() -> Any:
    """The model named by the environment (imported here: only the chosen provider's package is needed)."""
    provider = os.environ.get("MODEL_PROVIDER", "openai")
    model_id = os.environ.get("MODEL_ID", "local")
    if provider == "openai":  # OpenAI itself or any compatible server (vLLM, llama.cpp, Ollama, LM Studio, ...)
        from langchain_openai import ChatOpenAI

        return ChatOpenAI(
            model=model_id,
            base_url=os.environ.get("OPENAI_BASE_URL"),
            api_key=os.environ.get("OPENAI_API_KEY", "not-needed"),
            max_tokens=MAX_TOKENS,
            temperature=float(os.environ.get("TEMPERATURE", "0.7")),
            disable_streaming="tool_calling",  # tool calls arrive whole (some servers repeat names in deltas)
        )
    if provider == "bedrock":
        from langchain_aws import ChatBedrockConverse

        return ChatBedrockConverse(model=model_id, max_tokens=MAX_TOKENS)
    if provider == "anthropic":
        from langchain_anthropic import ChatAnthropic

        return ChatAnthropic(model=model_id, max_tokens=MAX_TOKENS)
    if provider == "gemini":
        from langchain_google_genai import ChatGoogleGenerativeAI

        return ChatGoogleGenerativeAI(model=model_id, max_output_tokens=MAX_TOKENS)
    raise ValueError(f"MODEL_PROVIDER must be openai, bedrock, anthropic or gemini, not {provider!r}")


model = chat_model()
must_call = model.bind_tools([add], tool_choice="add")


def _non_null(message: Any) -> Any:
    """An assistant turn that only called tools, with a blank text instead of none: some OpenAI-compatible
    servers (llama.cpp's Python server) refuse an assistant message whose content is null."""
    if isinstance(message, AIMessage) and message.tool_calls and not message.content:
        return message.model_copy(update={"content": " "})
    return message


async def call_model(state: MessagesState) -> dict[str, Any]:
    tool_answered = any(isinstance(m, ToolMessage) for m in state["messages"])
    if tool_answered:
        reply = await model.ainvoke([_non_null(m) for m in state["messages"]])
    else:
        reply = await must_call.ainvoke(state["messages"])
    return {"messages": [reply]}


def next_step(state: MessagesState) -> str:
    last = state["messages"][-1]
    return "tools" if getattr(last, "tool_calls", None) else END


builder = StateGraph(MessagesState)
builder.add_node("model", call_model)
builder.add_node("tools", ToolNode([add]))
builder.add_edge(START, "model")
builder.add_conditional_edges("model", next_step, ["tools", END])
builder.add_edge("tools", "model")
graph = builder.compile()

app = BedrockAgentCoreApp()


@app.entrypoint
async def invoke(payload: Any) -> AsyncIterator[dict[str, Any]]:
    prompt = str(payload.get("prompt", "hello")) if isinstance(payload, dict) else "hello"
    answer: list[str] = []
    inputs = {"messages": [HumanMessage(prompt)]}
    async for mode, item in graph.astream(inputs, stream_mode=["messages", "updates"]):
        if mode == "messages":
            chunk, meta = item
            if isinstance(chunk, AIMessageChunk) and chunk.content and meta.get("langgraph_node") == "model":
                answer.append(str(chunk.content))
                yield {"token": str(chunk.content)}
        elif "model" in item:
            for call in getattr(item["model"]["messages"][-1], "tool_calls", None) or []:
                yield {"tool_call": call["name"], "args": call["args"]}
        elif "tools" in item:
            for message in item["tools"]["messages"]:
                yield {"tool_result": message.content}
    yield {"done": True, "answer": "".join(answer)}


if __name__ == "__main__":
    app.run(port=int(os.environ.get("PORT", "8080")))
