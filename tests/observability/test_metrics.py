"""Prometheus metrics end to end: a real ``hangar serve`` (warm templates on), scraped at ``GET /metrics`` with plain
httpx and no credentials.

What is proven: a session forked from its version's template and one that starts cold (the runtime opts out with
``HANGAR_TEMPLATE=off``; an agent with a thread at import is unsafe to fork) move ``hangar_sessions_started_total``,
``hangar_session_cold_fallbacks_total`` (with a reason class, not the agent's text) and the
``hangar_session_start_seconds`` histogram; the gauges see the live sessions and the templates; no runtime, session,
sandbox id or ARN appears in the exposition. No timing thresholds.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest
from prometheus_client.exposition import choose_encoder
from prometheus_client.parser import text_string_to_metric_families

from hangar.observability.metrics import MAX_REASONS, OTHER_REASON, Metrics, reason_class
from tests.dataplane.support import deploy, new_session_id, operator, seeded_server, wait_for
from tests.support.server import HangarServer

OPT_OUT = "the runtime opts out of warm templates"
UNSAFE_THREADS = "the template runs N threads"

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def scrape(server: HangarServer) -> str:
    response = httpx.get(f"{server.url}/metrics", timeout=30)
    assert response.status_code == 200, response.text
    return response.text


def parse(text: str) -> Samples:
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


def version_state(server: HangarServer, runtime: dict[str, Any]) -> dict[str, Any] | None:
    key = f"{runtime['agentRuntimeId']}/{runtime['agentRuntimeVersion']}"
    return operator(server)["templates"]["versions"].get(key)


@dataclass
class Activity:
    """Scrapes taken around one forked, one opted-out and one unsafe (threaded) session, all still live."""

    runtimes: list[dict[str, Any]] = field(default_factory=list)
    sessions: list[str] = field(default_factory=list)
    scrapes: dict[str, str] = field(default_factory=dict)

    def samples(self, when: str) -> Samples:
        return parse(self.scrapes[when])

    def delta(self, name: str, **labels: str) -> float:
        return value(self.samples("after"), name, **labels) - value(self.samples("before"), name, **labels)


@pytest.fixture(scope="module")
def server() -> Iterator[HangarServer]:
    # No cold spare for the unsafe agent (on by default): its session must start cold, counting its fallback reason.
    with seeded_server("hangar-metrics-", ("testbed", "threaded"), env={"HANGAR_COLD_SPARES": "false"}) as hangar:
        if not operator(hangar)["templates"]["enabled"]:
            pytest.skip(f"warm templates need the namespace backend, this host has {operator(hangar)['backend']}")
        yield hangar


@pytest.fixture(scope="module")
def activity(server: HangarServer) -> Iterator[Activity]:
    control = server.boto3_client("bedrock-agentcore-control")
    data = server.boto3_client("bedrock-agentcore")
    forked = deploy(control, "testbed")
    opted_out = deploy(control, "testbed", environmentVariables={"HANGAR_TEMPLATE": "off"})
    threaded = deploy(control, "threaded")

    def template_alive() -> bool:
        state = version_state(server, forked)
        if state is not None and state["unsafeReason"] is not None:
            raise AssertionError(f"the testbed template is unusable: {state['unsafeReason']}")
        return bool(state and state["template"] and state["template"]["alive"])

    wait_for(template_alive, timeout=180)
    wait_for(lambda: (s := version_state(server, threaded)) and s["unsafeReason"], timeout=180)
    seen = Activity(runtimes=[forked, opted_out, threaded])
    seen.scrapes["before"] = scrape(server)
    for runtime in seen.runtimes:
        session_id = new_session_id()
        data.invoke_agent_runtime(
            agentRuntimeArn=runtime["agentRuntimeArn"], runtimeSessionId=session_id, payload=json.dumps({})
        )["response"].read()
        seen.sessions.append(session_id)
    seen.scrapes["after"] = scrape(server)
    live = {s["runtimeSessionId"]: s for s in operator(server)["sessions"] if s["state"] != "Terminated"}
    assert [live[s]["startKind"] for s in seen.sessions] == ["fork", "cold", "cold"]
    yield seen
    for runtime, session_id in zip(seen.runtimes, seen.sessions, strict=True):
        data.stop_runtime_session(agentRuntimeArn=runtime["agentRuntimeArn"], runtimeSessionId=session_id)


def test_metrics_need_no_credentials_and_speak_prometheus(server: HangarServer) -> None:
    plain = httpx.get(f"{server.url}/metrics")
    assert plain.status_code == 200
    assert plain.headers["content-type"] == choose_encoder(plain.request.headers["accept"])[1]
    assert "hangar_sessions_started_total" in plain.text
    accept = "application/openmetrics-text; version=1.0.0"
    openmetrics = httpx.get(f"{server.url}/metrics", headers={"accept": accept})
    assert openmetrics.status_code == 200
    assert openmetrics.headers["content-type"] == choose_encoder(accept)[1]
    assert openmetrics.text.rstrip().endswith("# EOF")


def test_a_forked_session_is_counted_and_timed(activity: Activity) -> None:
    assert activity.delta("hangar_sessions_started_total", start_kind="fork") == 1
    assert activity.delta("hangar_session_start_seconds_count", start_kind="fork") == 1
    assert activity.delta("hangar_session_start_seconds_sum", start_kind="fork") > 0
    assert activity.delta("hangar_sessions_started_total", start_kind="warm") == 0  # no warm pool on this server


def test_cold_sessions_count_their_fallback_reason_class(activity: Activity) -> None:
    assert activity.delta("hangar_sessions_started_total", start_kind="cold") == 2
    assert activity.delta("hangar_session_start_seconds_count", start_kind="cold") == 2
    assert activity.delta("hangar_session_start_seconds_bucket", start_kind="cold", le="+Inf") == 2
    assert activity.delta("hangar_session_cold_fallbacks_total", reason=OPT_OUT) == 1
    assert activity.delta("hangar_session_cold_fallbacks_total", reason=UNSAFE_THREADS) == 1
    assert "heartbeat" not in activity.scrapes["after"]  # the agent's thread name stays out of the label


def test_gauges_see_live_sessions_and_templates(activity: Activity) -> None:
    after = activity.samples("after")
    live = value(after, "hangar_sessions_live", state="active") + value(after, "hangar_sessions_live", state="idle")
    assert live == len(activity.sessions)
    assert value(after, "hangar_templates", state="alive") == 1  # the forked runtime's; the opted-out one has none
    assert value(after, "hangar_templates", state="unsafe") == 1  # the threaded agent's
    assert value(after, "hangar_warm_pool_spares", state="ready") == 0


def test_the_exposition_names_no_runtime_session_or_sandbox(server: HangarServer, activity: Activity) -> None:
    described = {s["runtimeSessionId"]: s for s in operator(server)["sessions"]}
    secrets = [s for r in activity.runtimes for s in (r["agentRuntimeId"], r["agentRuntimeArn"], r["agentRuntimeName"])]
    secrets += activity.sessions + [described[s]["sandboxId"] for s in activity.sessions]
    for text in (*activity.scrapes.values(), scrape(server)):
        leaked = [s for s in secrets if s in text]
        assert not leaked, leaked
    labels = {k for (_, pairs) in parse(scrape(server)) for k, _ in pairs}
    assert labels <= {"start_kind", "reason", "state", "result", "le"}, labels


# --- the registry alone (no server)


def test_reason_classes_drop_details_and_stay_few() -> None:
    assert reason_class("the fork failed: OSError: [Errno 12] Cannot allocate memory") == "the fork failed"
    assert reason_class("the runtime opts out of warm templates (HANGAR_TEMPLATE=no)") == OPT_OUT
    assert reason_class("the template runs 3 threads (heartbeat, x): a fork would lose them") == UNSAFE_THREADS
    metrics = Metrics()
    for n in range(MAX_REASONS + 10):
        metrics.cold_fallback(f"reason-{chr(97 + n % 26)}{chr(97 + n // 26)}: details")
    samples = parse(metrics.render()[0].decode())
    reasons = {dict(pairs)["reason"] for (name, pairs) in samples if name == "hangar_session_cold_fallbacks_total"}
    assert len(reasons) == MAX_REASONS + 1 and OTHER_REASON in reasons
    assert value(samples, "hangar_session_cold_fallbacks_total", reason=OTHER_REASON) == 10


def test_each_server_has_its_own_registry() -> None:
    first, second = Metrics(), Metrics()  # a second registry must not clash with the first (no global default)
    first.session_started("fork")
    assert value(parse(first.render()[0].decode()), "hangar_sessions_started_total", start_kind="fork") == 1
    assert value(parse(second.render()[0].decode()), "hangar_sessions_started_total", start_kind="fork") == 0
