"""A CrewAI crew: two agents (a counter with a tool, an editor it may delegate to) and one task.

The model is chosen by environment variables: ``MODEL_PROVIDER`` (``openai`` by default: any OpenAI-compatible
server at ``OPENAI_BASE_URL`` with ``OPENAI_API_KEY``; or ``bedrock``, ``anthropic``, ``gemini``) and ``MODEL_ID``;
``MAX_TOKENS`` caps each answer, ``TEMPERATURE`` (0.7) sets sampling. Telemetry is off and BLAS single-threaded
unless the environment says otherwise.

Payload ``{"prompt": "..."}``; answer ``{"answer": ..., "agent": ..., "tokens": ...}``.
"""

from __future__ import annotations

import os

os.environ.setdefault("CREWAI_DISABLE_TELEMETRY", "true")
os.environ.setdefault("OTEL_SDK_DISABLED", "true")
# numpy (imported by crewai's memory stores) starts an OpenBLAS thread pool at import; a warm template must not run
# threads to be forked from, and a session has little use for parallel BLAS.
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

from typing import Any

from crewai import LLM, Agent, Crew, Process, Task
from crewai.tools import tool

from hangar.sdk import BedrockAgentCoreApp

MAX_TOKENS = int(os.environ.get("MAX_TOKENS", "64"))
TEMPERATURE = float(os.environ.get("TEMPERATURE", "0.7"))
PREFIX = {"openai": "openai", "bedrock": "bedrock", "anthropic": "anthropic", "gemini": "gemini"}


@tool("word_count")
def word_count(text: str) -> int:
    """Count the words of a text."""
    return len(text.split())


def chat_model() -> LLM:
    provider = os.environ.get("MODEL_PROVIDER", "openai")
    if provider not in PREFIX:
        raise ValueError(f"MODEL_PROVIDER must be one of {', '.join(PREFIX)}, not {provider!r}")
    options: dict[str, Any] = {"max_tokens": MAX_TOKENS, "temperature": TEMPERATURE}
    if provider == "openai":
        options["base_url"] = os.environ.get("OPENAI_BASE_URL")
        options["api_key"] = os.environ.get("OPENAI_API_KEY", "none")
    return LLM(model=f"{PREFIX[provider]}/{os.environ.get('MODEL_ID', 'local')}", **options)


MODEL = chat_model()
app = BedrockAgentCoreApp()


@app.entrypoint
async def invoke(payload: Any) -> dict[str, Any]:
    prompt = str(payload.get("prompt", "hello")) if isinstance(payload, dict) else "hello"
    counter = Agent(
        role="Counter",
        goal="Count the words of the text you are given",
        backstory="You are precise and use your word_count tool.",
        tools=[word_count],
        llm=MODEL,
        allow_delegation=True,
        max_iter=2,
        verbose=False,
    )
    editor = Agent(
        role="Editor",
        goal="Say the count in one short sentence",
        backstory="You write tersely.",
        llm=MODEL,
        allow_delegation=False,
        max_iter=1,
        verbose=False,
    )
    task = Task(
        description=f"Count the words of this text: {prompt}",
        expected_output="The number of words",
        agent=counter,
    )
    crew = Crew(agents=[counter, editor], tasks=[task], process=Process.sequential, verbose=False)
    result = await crew.kickoff_async()
    usage = getattr(result, "token_usage", None)
    return {
        "answer": str(result.raw),
        "agent": result.tasks_output[0].agent if result.tasks_output else None,
        "tokens": getattr(usage, "total_tokens", None),
    }


if __name__ == "__main__":
    app.run(port=int(os.environ.get("PORT", "8080")))
