"""A session start's phases as spans, on real (namespace) sandboxes: a real ``hangar serve`` exporting over OTLP/HTTP
to a real receiver (``tests/support/otlp.py``), invoked through boto3.

What is proven: the first session of a version starts cold and its ``hangar.session.start`` span (a child of the
invocation's server span) has ``hangar.session.launch`` then ``hangar.session.wait_ready`` as children; once the
version's warm template is ready, a new session forks and its start has ``hangar.session.fork`` then
``hangar.session.wait_ready``; the namespace backend's steps are children of those (cold: ``hangar.sandbox.prepare``,
``hangar.sandbox.launch``, ``hangar.sandbox.network`` where a veth is made, ``hangar.sandbox.supervisor_ready``;
fork: ``hangar.sandbox.take_fork``, ``hangar.sandbox.finish_fork``); the template work the first start set off adds
no phase span. Forks need the namespace backend: without it this skips, and fails under ``HANGAR_REQUIRE_ISOLATION``
(tests/conftest.py). The process backend's cold start: test_traces.py.
"""

from __future__ import annotations

import contextlib
import itertools
import json
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from botocore.exceptions import ClientError

from tests.dataplane.support import deploy, new_session_id, operator, seeded_server, wait_for
from tests.support.otlp import OtlpReceiver, ReceivedSpan
from tests.support.server import HangarServer

ROUTE = "POST /runtimes/{agentRuntimeArn}/invocations"
WAIT_S = 180.0
PHASES = ("hangar.session.fork", "hangar.session.launch", "hangar.session.wait_ready")


@dataclass
class Started:
    server: HangarServer
    receiver: OtlpReceiver
    runtime: dict[str, Any]

    def invoke(self, session_id: str) -> None:
        data = self.server.boto3_client("bedrock-agentcore")
        data.invoke_agent_runtime(
            agentRuntimeArn=self.runtime["agentRuntimeArn"],
            runtimeSessionId=session_id,
            payload=json.dumps({"prompt": "hello"}),
        )["response"].read()

    def start_span(self, session_id: str) -> tuple[ReceivedSpan, ReceivedSpan, dict[str, ReceivedSpan]]:
        """The call's server span, its ``hangar.session.start`` child, and that one's children (the phases)."""

        def server() -> ReceivedSpan | None:
            return next(
                (
                    s
                    for s in list(self.receiver.spans)
                    if s.name == ROUTE and s.attributes.get("aws.agentcore.runtime_session_id") == session_id
                ),
                None,
            )

        call = wait_for(server, timeout=WAIT_S)

        def start() -> ReceivedSpan | None:
            spans = self.receiver.trace(call.trace_id)
            return next((s for s in spans if s.name == "hangar.session.start" and s.parent_id == call.span_id), None)

        starting = wait_for(start, timeout=WAIT_S)
        return call, starting, self.children(starting)

    def children(self, parent: ReceivedSpan) -> dict[str, ReceivedSpan]:
        """Children end before their parent: they were exported with it or before it."""
        return {s.name: s for s in self.receiver.trace(parent.trace_id) if s.parent_id == parent.span_id}


@pytest.fixture(scope="module")
def started() -> Iterator[Started]:
    with OtlpReceiver() as receiver:
        env = {
            "HANGAR_OTLP_ENDPOINT": receiver.endpoint,
            "OTEL_BSP_SCHEDULE_DELAY": "100",  # export batches every 100 ms, not every 5 s
            "HANGAR_COLD_SPARES": "false",  # the first session starts cold, not from a spare started ahead
            "HANGAR_SPARES": "off",  # nor from a forked spare: the second one forks now
        }
        with seeded_server("hangar-start-spans-", ("testbed",), env=env) as server:
            if not operator(server)["templates"]["enabled"]:
                pytest.skip(f"forked starts need the namespace backend, this host has {operator(server)['backend']}")
            runtime = deploy(server.boto3_client("bedrock-agentcore-control"), "testbed")
            yield Started(server, receiver, runtime)


def test_cold_then_forked_start_phases(started: Started) -> None:
    data = started.server.boto3_client("bedrock-agentcore")
    arn = started.runtime["agentRuntimeArn"]
    first, second = new_session_id(), new_session_id()
    try:
        started.invoke(first)
        call, starting, phases = started.start_span(first)
        assert starting.attributes["hangar.session.start_kind"] == "cold"
        assert "hangar.session.cold_reason" in starting.attributes
        assert set(phases) == {"hangar.session.launch", "hangar.session.wait_ready"}
        assert phases["hangar.session.launch"].end_ns <= phases["hangar.session.wait_ready"].start_ns
        for span in phases.values():
            assert span.trace_id == call.trace_id and not span.error
            assert starting.start_ns <= span.start_ns <= span.end_ns <= starting.end_ns
        steps = started.children(phases["hangar.session.launch"])  # the namespace backend's own steps
        # the network's step only where the runtime has one to wait for (a veth made beside the launch)
        named = [f"hangar.sandbox.{name}" for name in ("prepare", "launch", "network", "supervisor_ready")]
        assert set(named) - {"hangar.sandbox.network"} <= set(steps) <= set(named)
        in_order = [steps[name] for name in named if name in steps]
        assert all(earlier.end_ns <= later.start_ns for earlier, later in itertools.pairwise(in_order))

        key = f"{started.runtime['agentRuntimeId']}/{started.runtime['agentRuntimeVersion']}"

        def template_ready() -> bool:
            state = operator(started.server)["templates"]["versions"].get(key)
            assert state is None or state["unsafeReason"] is None, state
            return bool(state and state["template"] and state["template"]["alive"])

        wait_for(template_ready, timeout=WAIT_S)
        started.invoke(second)
        call, starting, phases = started.start_span(second)
        assert starting.attributes["hangar.session.start_kind"] == "fork"
        assert set(phases) == {"hangar.session.fork", "hangar.session.wait_ready"}
        assert phases["hangar.session.fork"].end_ns <= phases["hangar.session.wait_ready"].start_ns
        assert all(span.trace_id == call.trace_id and not span.error for span in phases.values())
        steps = started.children(phases["hangar.session.fork"])
        assert set(steps) == {"hangar.sandbox.take_fork", "hangar.sandbox.finish_fork"}
        assert steps["hangar.sandbox.take_fork"].end_ns <= steps["hangar.sandbox.finish_fork"].start_ns
    finally:
        for session_id in (first, second):
            with contextlib.suppress(ClientError):  # a session that never started: the assertion above says why
                data.stop_runtime_session(agentRuntimeArn=arn, runtimeSessionId=session_id)
    # Only the calls' own starts have phases: the template and refills the first start set off ran in other tasks.
    assert len([s for s in started.receiver.spans if s.name in PHASES]) == 4
    sandbox_steps = [s.name for s in started.receiver.spans if s.name.startswith("hangar.sandbox.")]
    assert len(sandbox_steps) == 4 + sandbox_steps.count("hangar.sandbox.launch") + sandbox_steps.count(
        "hangar.sandbox.network"
    )
    assert sandbox_steps.count("hangar.sandbox.launch") == 1  # the first session's cold launch alone
