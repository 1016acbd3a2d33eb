"""An agent that imports a real framework (LangGraph) and builds its graph at import, as real agents do."""

import os
from typing import TypedDict

from langgraph.graph import END, START, StateGraph

from hangar.sdk import BedrockAgentCoreApp


class State(TypedDict):
    input: str
    output: str


def echo(state: State) -> dict[str, str]:
    return {"output": state["input"]}


builder = StateGraph(State)
builder.add_node("echo", echo)
builder.add_edge(START, "echo")
builder.add_edge("echo", END)
graph = builder.compile()

app = BedrockAgentCoreApp()


@app.entrypoint
def invoke(payload):  # type: ignore[no-untyped-def]
    return graph.invoke({"input": str(payload.get("prompt", "")), "output": ""})


if __name__ == "__main__":
    app.run(port=int(os.environ.get("PORT", "8080")))
