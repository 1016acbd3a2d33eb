"""LangGraph, Strands and CrewAI agents, deployed as they are from ``examples/``, against a real local model server
(llama-cpp-python's OpenAI-compatible server on a tiny random GGUF, reached through the session's normal egress):
the tool call is filled by the engine's grammar, the tool runs, the reply streams token by token, and the
sessions start by fork from the warm template."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from tests.dataplane.support import deploy, new_session_id, sessions, wait_for
from tests.protocols.model_server import ModelServer, local_model_server
from tests.support.server import HangarServer

FRAMEWORKS = ("langgraph", "strands")
PROMPT = "what is 2 plus 40?"


@pytest.fixture(scope="module")
def model_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ModelServer]:
    with local_model_server(tmp_path_factory.mktemp("model")) as running:
        yield running


def deploy_on(control: Any, framework: str, model_server: ModelServer) -> dict[str, Any]:
    return deploy(
        control,
        framework,
        environmentVariables={
            "OPENAI_BASE_URL": model_server.base_url,
            "OPENAI_API_KEY": "local",
            "MODEL_ID": model_server.model,
            "MAX_TOKENS": "64",
            "TEMPERATURE": "0",
        },
    )


def forked_run(server: HangarServer, data: Any, runtime: dict[str, Any]) -> Any:
    """Invoke new sessions until one started by fork (the template starts beside the first); its answer."""
    assert httpx.get(f"{server.url}/healthz", timeout=30).json()["sandbox"]["isolates"], "needs namespace egress"
    runs: list[Any] = []

    def forked() -> str | None:
        session_id = new_session_id()
        answer = data.invoke_agent_runtime(
            agentRuntimeArn=runtime["agentRuntimeArn"],
            runtimeSessionId=session_id,
            payload=json.dumps({"prompt": PROMPT}),
        )
        runs.append((answer["contentType"], answer["response"].read().decode()))
        (record,) = [s for s in sessions(server) if s["runtimeSessionId"] == session_id]
        data.stop_runtime_session(agentRuntimeArn=runtime["agentRuntimeArn"], runtimeSessionId=session_id)
        return session_id if record["startKind"] == "fork" else None

    try:
        wait_for(forked, timeout=240, interval=0.5)
    except AssertionError:
        mine = [s for s in sessions(server) if s["runtimeId"] == runtime["agentRuntimeId"]]
        pytest.fail(f"no session started by fork: {[(s['startKind'], s.get('coldReason')) for s in mine]}")
    return runs[-1]


@pytest.mark.parametrize("framework", FRAMEWORKS)
def test_framework_agent_streams_a_tool_call_and_a_reply(
    server: HangarServer, control: Any, data: Any, model_server: ModelServer, framework: str
) -> None:
    content_type, body = forked_run(server, data, deploy_on(control, framework, model_server))
    assert content_type.startswith("text/event-stream")
    events = [json.loads(line.removeprefix("data: ")) for line in body.splitlines() if line]
    calls = [e for e in events if "tool_call" in e]
    results = [e for e in events if "tool_result" in e]
    tokens = [e["token"] for e in events if "token" in e]
    assert [c["tool_call"] for c in calls] == ["add"], events
    a, b = calls[0]["args"]["a"], calls[0]["args"]["b"]
    assert isinstance(a, int) and isinstance(b, int)  # the engine's grammar filled the tool's JSON schema
    assert [str(r["tool_result"]) for r in results] == [str(a + b)]  # and the tool ran on what the model chose
    answer = "".join(tokens)
    assert tokens and events[-1] == {"done": True, "answer": answer.strip() if framework == "strands" else answer}


def test_crewai_crew_answers_from_the_local_model(
    server: HangarServer, control: Any, data: Any, model_server: ModelServer
) -> None:
    content_type, body = forked_run(server, data, deploy_on(control, "crewai", model_server))
    assert content_type.startswith("application/json")
    found = json.loads(body)
    assert found["agent"] == "Counter" and isinstance(found["answer"], str)
    assert found["tokens"] and found["tokens"] > 0  # usage as the model server counted it
