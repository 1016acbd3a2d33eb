"""AG-UI through Hangar: an agent on ``ag-ui-protocol`` streams its events (run started/finished, state snapshot,
tool call, text message chunks) over SSE and over WebSocket, with SigV4 and with a bearer JWT; every event is
read back with the package's own ``Event`` model."""

from __future__ import annotations

import asyncio
import json
from typing import Any
from urllib.parse import quote

import httpx
import pytest
import websockets
from ag_ui.core import Event, RunAgentInput, UserMessage
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials
from pydantic import TypeAdapter

from tests.auth.jwt_support import rules_for
from tests.dataplane.support import deploy, new_session_id, session_state, wait_for
from tests.protocols.support import SESSION_HEADER, SigV4Httpx, admin_key, invocations_url
from tests.support.idp_common import RunningIdp
from tests.support.server import HangarServer

AGUI = {"serverProtocol": "AGUI"}
EVENTS: TypeAdapter[Any] = TypeAdapter(Event)
EXPECTED = [
    "RUN_STARTED",
    "STATE_SNAPSHOT",
    "TOOL_CALL_START",
    "TOOL_CALL_ARGS",
    "TOOL_CALL_END",
    "TOOL_CALL_RESULT",
    "TEXT_MESSAGE_START",
    "TEXT_MESSAGE_CONTENT",
    "TEXT_MESSAGE_CONTENT",
    "TEXT_MESSAGE_CONTENT",
    "TEXT_MESSAGE_END",
    "RUN_FINISHED",
]


def run_input(text: str, thread: str = "thread-1") -> str:
    run = RunAgentInput(
        thread_id=thread,
        run_id=f"run-{text.split()[0]}",
        state={},
        messages=[UserMessage(id="m1", content=text)],
        tools=[],
        context=[],
        forwarded_props={},
    )
    return run.model_dump_json(by_alias=True)


def parse_sse(lines: list[str]) -> list[Any]:
    return [EVENTS.validate_json(line[5:]) for line in lines if line.startswith("data:")]


def check_run(events: list[Any], text: str, turns: int) -> None:
    assert [e.type.value for e in events] == EXPECTED
    assert events[1].snapshot == {"turns": turns, "last": text}
    assert events[2].tool_call_name == "word_count" and json.loads(events[3].delta) == {"text": text}
    assert events[5].content == str(len(text.split()))
    assert "".join(e.delta for e in events if e.type.value == "TEXT_MESSAGE_CONTENT") == " ".join(text.split()[::-1])


@pytest.fixture(scope="module")
def agui(control: Any) -> dict[str, Any]:
    return deploy(control, "agui_agent", protocolConfiguration=AGUI)


def test_sse_runs_through_hangar_with_sigv4(server: HangarServer, agui: dict[str, Any]) -> None:
    session = new_session_id()
    headers = {SESSION_HEADER: session, "Content-Type": "application/json", "Accept": "text/event-stream"}
    with httpx.Client(auth=SigV4Httpx(admin_key(server)), headers=headers, timeout=60) as http:
        for turn, text in enumerate(("one two three", "four five six"), start=1):
            with http.stream("POST", invocations_url(server, agui), content=run_input(text)) as streamed:
                assert streamed.status_code == 200
                assert streamed.headers["content-type"].startswith("text/event-stream")
                check_run(parse_sse(list(streamed.iter_lines())), text, turns=turn)  # same sandbox: turns add up


def test_boto3_invoke_reads_the_event_stream(data: Any, agui: dict[str, Any]) -> None:
    response = data.invoke_agent_runtime(
        agentRuntimeArn=agui["agentRuntimeArn"], runtimeSessionId=new_session_id(), payload=run_input("a b c")
    )
    assert response["contentType"].startswith("text/event-stream")
    lines = [line.decode() for line in response["response"].iter_lines()]
    check_run(parse_sse(lines), "a b c", turns=1)


def _ws_url(server: HangarServer, runtime: dict[str, Any]) -> str:
    return f"ws://127.0.0.1:{server.port}/runtimes/{quote(runtime['agentRuntimeArn'], safe='')}/ws"


async def ws_run(url: str, headers: dict[str, str], text: str) -> tuple[list[Any], int | None]:
    frames: list[str] = []
    async with websockets.connect(url, additional_headers=headers) as ws:
        await ws.send(run_input(text))
        async for frame in ws:
            frames.append(str(frame))
        code = ws.close_code
    return parse_sse([f.strip() for f in frames]), code


def test_websocket_runs_through_hangar_with_sigv4(server: HangarServer, agui: dict[str, Any]) -> None:
    url = _ws_url(server, agui)
    session = new_session_id()
    request = AWSRequest(method="GET", url=url.replace("ws://", "http://"), headers={SESSION_HEADER: session})
    SigV4Auth(Credentials(*admin_key(server)), "bedrock-agentcore", "us-west-2").add_auth(request)
    headers = {k: v for k, v in request.headers.items() if k.lower() != "host"}
    events, code = asyncio.run(ws_run(url, headers, "seven eight nine"))
    check_run(events, "seven eight nine", turns=1)
    assert code == 1000


def test_sse_and_websocket_with_a_bearer_jwt(server: HangarServer, control: Any, panva_idp: RunningIdp) -> None:
    runtime = deploy(
        control,
        "agui_agent",
        protocolConfiguration=AGUI,
        authorizerConfiguration={"customJWTAuthorizer": rules_for(panva_idp)},
    )
    session = new_session_id()
    bearer = {"Authorization": f"Bearer {panva_idp.token('agent-client')}", SESSION_HEADER: session}
    answer = httpx.post(
        invocations_url(server, runtime),
        headers={**bearer, "Content-Type": "application/json"},
        content=run_input("x y z"),
        timeout=60,
    )
    assert answer.status_code == 200, answer.text
    check_run(parse_sse(answer.text.splitlines()), "x y z", turns=1)
    events, _ = asyncio.run(ws_run(_ws_url(server, runtime), bearer, "p q r"))
    check_run(events, "p q r", turns=2)


def test_client_gone_mid_run_leaves_the_session_usable(server: HangarServer, control: Any) -> None:
    slow = deploy(control, "agui_agent", protocolConfiguration=AGUI, environmentVariables={"WORD_DELAY": "0.2"})
    session = new_session_id()
    headers = {SESSION_HEADER: session, "Content-Type": "application/json"}
    many = " ".join(f"w{n}" for n in range(100))
    with httpx.Client(auth=SigV4Httpx(admin_key(server)), headers=headers, timeout=60) as http:
        with http.stream("POST", invocations_url(server, slow), content=run_input(many)) as streamed:
            assert next(streamed.iter_lines()).startswith("data:")  # RUN_STARTED, then the client leaves
        wait_for(lambda: session_state(server, slow["agentRuntimeId"], session) == "Idle", timeout=60)
        again = http.post(invocations_url(server, slow), content=run_input("still here now"))
        assert again.status_code == 200
        check_run(parse_sse(again.text.splitlines()), "still here now", turns=2)
