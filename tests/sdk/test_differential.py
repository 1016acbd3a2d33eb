"""hangar.sdk against the real bedrock-agentcore SDK: the same agents, the same requests, the same bytes back.

Both SDKs serve agents built by ``agents.build_agent`` on real uvicorn servers; every corpus script runs against
both and the outcomes (status, content type, body, normalised) must be equal, except for the deliberate
differences, where each side is pinned to its own expected outcome and docs/sdk.md must mention the case.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from bedrock_agentcore.runtime import BedrockAgentCoreApp as ReferenceApp

from hangar.sdk import AgentApp
from tests.sdk.agents import FLAVOURS, build_agent
from tests.sdk.corpus import HTTP_CASES, WS_CASES, Case, WsCase
from tests.sdk.servers import ThreadServer
from tests.sdk.wire import run_case, run_ws_script

IMPLEMENTATIONS = (("reference", ReferenceApp), ("hangar", AgentApp))
SDK_DOC = Path(__file__).resolve().parents[2] / "docs" / "sdk.md"


@pytest.fixture(scope="module")
def servers() -> Iterator[dict[tuple[str, str], ThreadServer]]:
    started: dict[tuple[str, str], ThreadServer] = {}
    try:
        for implementation, app_class in IMPLEMENTATIONS:
            for flavour in FLAVOURS:
                started[implementation, flavour] = ThreadServer(build_agent(app_class, flavour)).start()
        yield started
    finally:
        for server in started.values():
            server.stop()


@pytest.mark.parametrize("case", HTTP_CASES, ids=lambda case: case.name)
def test_http_case(servers: dict[tuple[str, str], ThreadServer], case: Case) -> None:
    reference = run_case(servers["reference", case.flavour].url, case)
    hangar = run_case(servers["hangar", case.flavour].url, case)
    if case.difference is None:
        assert hangar == reference
    else:
        assert reference == case.difference.reference, "the reference SDK changed; re-check docs/sdk.md"
        assert hangar == case.difference.hangar
        assert hangar != reference


@pytest.mark.parametrize("script", WS_CASES, ids=lambda script: script.name)
def test_websocket_case(servers: dict[tuple[str, str], ThreadServer], script: WsCase) -> None:
    reference = run_ws_script(servers["reference", script.flavour].ws_url, script.messages, script.headers)
    hangar = run_ws_script(servers["hangar", script.flavour].ws_url, script.messages, script.headers)
    assert hangar == reference
    assert hangar, "a WebSocket script must observe something"


def test_corpus_is_broad_enough() -> None:
    requests = sum(len(case.steps) for case in HTTP_CASES) + len(WS_CASES)
    assert requests >= 40
    assert {case.flavour for case in HTTP_CASES} == set(FLAVOURS)


def test_every_deliberate_difference_is_documented() -> None:
    documented = SDK_DOC.read_text(encoding="utf-8")
    differing = [case.name for case in HTTP_CASES if case.difference is not None]
    assert differing
    missing = [name for name in differing if f"`{name}`" not in documented]
    assert not missing, f"docs/sdk.md does not mention these deliberate differences: {missing}"
