"""Traces into a real OTLP receiver from the registries: Arize Phoenix (PyPI, its own venv: tests/support/phoenix.py).

A real ``hangar serve`` exports over OTLP/HTTP to ``phoenix serve``, and so does an agent instrumented with
opentelemetry-sdk (``tests/support/agents/tracedagent``); boto3 invokes it (a cold start, then a warm call), and
the spans are read back from Phoenix's REST API, i.e. as a real backend stored them. What is proven: one trace
id per call; the gateway's server span is its only root; authentication (with version resolution inside it), the
session start (with a cold start's phases), the agent call, the stream, and hangar.sdk's span in the agent with the
agent's OWN span under it, each hang under the right parent; the HTTP, AgentCore and GenAI attributes that
docs/traces.md promises are stored; a client's ``traceparent`` becomes the root's parent. Those sessions run on
the process backend so that the agent reaches Phoenix on loopback (docs/traces.md: a sandbox's network is its own);
a second server on namespace sandboxes proves a forked start's tree (fork and wait_ready under the session start,
the backend's take_fork and finish_fork under fork), gateway spans only: its agents cannot reach loopback.
Phoenix missing (``make test-deps`` installs it): skip, and a failure under HANGAR_REQUIRE_ISOLATION.
"""

from __future__ import annotations

import contextlib
import json
import secrets
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from botocore.exceptions import ClientError

from tests.dataplane.support import deploy, new_session_id, operator, seeded_server, wait_for
from tests.support import phoenix as phoenix_support
from tests.support.phoenix import Phoenix, StoredSpan
from tests.support.server import HangarServer

ROUTE = "POST /runtimes/{agentRuntimeArn}/invocations"
WAIT_S = 60.0


@dataclass
class Stored:
    server: HangarServer
    phoenix: Phoenix
    runtime: dict[str, Any]

    def invoke(self, session_id: str, **trace: str) -> None:
        data = self.server.boto3_client("bedrock-agentcore")
        answer = data.invoke_agent_runtime(
            agentRuntimeArn=self.runtime["agentRuntimeArn"],
            runtimeSessionId=session_id,
            payload=json.dumps({"prompt": "hello"}),
            **trace,
        )
        answer["response"].read()

    def stop(self, session_id: str) -> None:
        data = self.server.boto3_client("bedrock-agentcore")
        data.stop_runtime_session(agentRuntimeArn=self.runtime["agentRuntimeArn"], runtimeSessionId=session_id)

    def server_spans(self, session_id: str, count: int) -> list[StoredSpan]:
        """The gateway's server spans of this session as Phoenix stored them, once ``count`` are there."""

        def found() -> list[StoredSpan] | None:
            spans = [
                s
                for s in self.phoenix.spans()
                if s.name == ROUTE and s.attributes.get("aws.agentcore.runtime_session_id") == session_id
            ]
            return spans if len(spans) >= count else None

        return sorted(wait_for(found, timeout=WAIT_S, interval=0.5), key=lambda s: s.start)

    def tree(self, root: StoredSpan, names: set[str]) -> dict[str, StoredSpan]:
        """The trace's spans by name, once all of ``names`` are stored (the agent exports on its own)."""

        def found() -> dict[str, StoredSpan] | None:
            spans = {s.name: s for s in self.phoenix.trace(root.trace_id)}
            return spans if names <= set(spans) else None

        return wait_for(found, timeout=WAIT_S, interval=0.5)


@pytest.fixture(scope="module")
def phoenix() -> Iterator[Phoenix]:
    """One Phoenix for the module, started before the servers so that its imports overlap their start."""
    if not phoenix_support.installed():
        pytest.skip(f"Phoenix is not installed in {phoenix_support.VENV} (make test-deps installs it)")
    with Phoenix() as phoenix:
        yield phoenix


@pytest.fixture(scope="module")
def stored(phoenix: Phoenix) -> Iterator[Stored]:
    env = {
        "HANGAR_SANDBOX_BACKEND": "process",
        "HANGAR_OTLP_ENDPOINT": phoenix.endpoint,
        "OTEL_BSP_SCHEDULE_DELAY": "100",  # export batches every 100 ms, not every 5 s
    }
    with seeded_server("hangar-phoenix-", ("tracedagent",), env=env) as server:
        control = server.boto3_client("bedrock-agentcore-control")
        runtime = deploy(control, "tracedagent", environmentVariables={"OTEL_EXPORTER_OTLP_ENDPOINT": phoenix.endpoint})
        phoenix.ready()  # it started first: its imports ran while Hangar started and built the agent
        yield Stored(server, phoenix, runtime)


@pytest.fixture(scope="module")
def namespaced(phoenix: Phoenix) -> Iterator[Stored]:
    """Namespace sandboxes, so that a session can fork (their agents cannot reach loopback: gateway spans only)."""
    env = {
        "HANGAR_OTLP_ENDPOINT": phoenix.endpoint,
        "OTEL_BSP_SCHEDULE_DELAY": "100",
        "HANGAR_COLD_SPARES": "false",  # the first session starts cold, not from a spare started ahead
        "HANGAR_SPARES": "off",  # nor from a forked spare: the second one forks now
    }
    with seeded_server("hangar-phoenix-ns-", ("testbed",), env=env) as server:
        backend = operator(server)
        if not backend["templates"]["enabled"]:
            pytest.skip(f"forked starts need the namespace backend, this host has {backend['backend']}")
        runtime = deploy(server.boto3_client("bedrock-agentcore-control"), "testbed")
        phoenix.ready()
        yield Stored(server, phoenix, runtime)


def test_a_cold_then_warm_invoke_is_stored_as_one_tree_each(stored: Stored) -> None:
    session_id = new_session_id()
    try:
        stored.invoke(session_id)
        stored.invoke(session_id)
    finally:
        stored.stop(session_id)
    cold, warm = stored.server_spans(session_id, count=2)
    assert cold.trace_id != warm.trace_id  # no client context: each call is its own trace

    runtime_name = stored.runtime["agentRuntimeName"]
    call_name = f"invoke_agent {runtime_name}"
    phases = {"hangar.session.launch", "hangar.session.wait_ready"}
    names = {"hangar.auth", "hangar.resolve_version", "hangar.session.start", call_name, "hangar.stream"}
    spans = stored.tree(cold, names | phases | {"invoke_agent", "agent.work"})
    trace = stored.phoenix.trace(cold.trace_id)
    assert len(trace) == len(spans)  # one span per name in a cold call: nothing doubled, nothing foreign
    assert [s.name for s in trace if s.parent_id == ""] == [ROUTE]  # the server span is the only root
    ids = {s.span_id for s in trace}
    assert all(s.parent_id in ids for s in trace if s.parent_id)  # every other span hangs in this trace

    def parent(name: str) -> str:
        by_id = {s.span_id: s.name for s in trace}
        return by_id[spans[name].parent_id]

    assert {name: parent(name) for name in names - {"hangar.resolve_version"}} == dict.fromkeys(
        names - {"hangar.resolve_version"}, ROUTE
    )
    assert parent("hangar.resolve_version") == "hangar.auth"
    assert {parent(name) for name in phases} == {"hangar.session.start"}
    assert spans["hangar.session.launch"].end <= spans["hangar.session.wait_ready"].start
    assert parent("invoke_agent") == call_name  # hangar.sdk's span, exported by the agent itself
    assert parent("agent.work") == "invoke_agent"  # the agent's own span
    assert spans["agent.work"].attributes["agent.prompt"] == "hello"
    assert spans["invoke_agent"].attributes["session.id"] == session_id

    root = spans[ROUTE]
    assert root.status != "ERROR"
    expected = {
        "http.request.method": "POST",
        "http.route": "/runtimes/{agentRuntimeArn}/invocations",
        "http.response.status_code": 200,
        "aws.agentcore.runtime_arn": stored.runtime["agentRuntimeArn"],
        "aws.agentcore.runtime_id": stored.runtime["agentRuntimeId"],
        "aws.agentcore.qualifier": "DEFAULT",
        "aws.agentcore.runtime_session_id": session_id,
        "session.id": session_id,
        "hangar.protocol": "HTTP",
        "gen_ai.operation.name": "invoke_agent",
        "gen_ai.agent.id": stored.runtime["agentRuntimeId"],
        "gen_ai.agent.name": runtime_name,
    }
    assert {key: root.attributes.get(key) for key in expected} == expected
    assert {"url.path", "server.address", "server.port", "client.address"} <= set(root.attributes)
    call = spans[call_name].attributes
    assert (call["gen_ai.operation.name"], call["gen_ai.agent.name"]) == ("invoke_agent", runtime_name)
    started = spans["hangar.session.start"].attributes
    assert started["hangar.session.start_kind"] == "cold" and started["hangar.sandbox.id"]
    for span in spans.values():  # each step lies within the server span
        assert root.start <= span.start <= span.end <= root.end

    again = stored.tree(warm, {"hangar.session.start", call_name, "invoke_agent", "agent.work"})
    assert again["hangar.session.start"].attributes["hangar.session.start_kind"] == "warm"
    warm_trace = stored.phoenix.trace(warm.trace_id)
    assert not phases & {s.name for s in warm_trace}  # a running session: no start phases


def test_a_client_traceparent_is_the_stored_roots_parent(stored: Stored) -> None:
    trace_id, parent_id = secrets.token_hex(16), secrets.token_hex(8)
    session_id = new_session_id()
    try:
        stored.invoke(session_id, traceParent=f"00-{trace_id}-{parent_id}-01")
    finally:
        stored.stop(session_id)
    (span,) = stored.server_spans(session_id, count=1)
    assert (span.trace_id, span.parent_id) == (trace_id, parent_id)
    agent = stored.tree(span, {"agent.work"})["agent.work"]
    assert agent.trace_id == trace_id


def test_a_forked_start_is_stored_with_its_phases(namespaced: Stored) -> None:
    first, second = new_session_id(), new_session_id()
    key = f"{namespaced.runtime['agentRuntimeId']}/{namespaced.runtime['agentRuntimeVersion']}"

    def template_ready() -> bool:
        state = operator(namespaced.server)["templates"]["versions"].get(key)
        assert state is None or state["unsafeReason"] is None, state
        return bool(state and state["template"] and state["template"]["alive"])

    try:
        namespaced.invoke(first)  # cold: it sets off the version's template
        wait_for(template_ready, timeout=180)
        namespaced.invoke(second)
    finally:
        for session_id in (first, second):
            with contextlib.suppress(ClientError):  # a session that never started: the assertion says why
                namespaced.stop(session_id)
    (root,) = namespaced.server_spans(second, count=1)
    steps = {
        "hangar.session.fork",
        "hangar.session.wait_ready",
        "hangar.sandbox.take_fork",
        "hangar.sandbox.finish_fork",
    }
    spans = namespaced.tree(root, steps | {"hangar.session.start", "hangar.auth", "hangar.stream"})
    trace = namespaced.phoenix.trace(root.trace_id)
    assert [s.name for s in trace if s.parent_id == ""] == [ROUTE]
    by_id = {s.span_id: s.name for s in trace}
    parents = {name: by_id[spans[name].parent_id] for name in steps | {"hangar.session.start"}}
    assert parents == {
        "hangar.session.start": ROUTE,
        "hangar.session.fork": "hangar.session.start",
        "hangar.session.wait_ready": "hangar.session.start",
        "hangar.sandbox.take_fork": "hangar.session.fork",
        "hangar.sandbox.finish_fork": "hangar.session.fork",
    }
    assert spans["hangar.session.start"].attributes["hangar.session.start_kind"] == "fork"
    assert spans["hangar.session.fork"].end <= spans["hangar.session.wait_ready"].start
    assert spans["hangar.sandbox.take_fork"].end <= spans["hangar.sandbox.finish_fork"].start
    assert all(span.status != "ERROR" for span in spans.values())
