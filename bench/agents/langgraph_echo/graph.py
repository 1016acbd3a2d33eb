"""The peer: the same echo graph served by the LangGraph API dev server."""

from typing import TypedDict

from langgraph.graph import END, START, StateGraph


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
