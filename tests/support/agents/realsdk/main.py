"""Test agent written against the real ``bedrock-agentcore`` SDK from PyPI, unchanged from how AWS would run it."""

from __future__ import annotations

from collections.abc import Iterator

from bedrock_agentcore import BedrockAgentCoreApp, RequestContext

app = BedrockAgentCoreApp()
turns: list[str] = []


def words(prompt: str) -> Iterator[dict]:
    for word in prompt.split():
        yield {"word": word}


@app.entrypoint
def invoke(payload: dict, context: RequestContext) -> object:
    if payload.get("stream"):
        return words(str(payload.get("prompt", "")))
    turns.append(str(payload.get("prompt")))
    return {"sdk": "bedrock-agentcore", "session": context.session_id, "turns": turns}


if __name__ == "__main__":
    app.run()
