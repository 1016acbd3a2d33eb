"""A2A through Hangar with the official ``a2a-sdk`` client: the card (GetAgentCard and its well-known path) points
back through Hangar, messages sent plain and streamed (SSE), tasks fetched; SigV4 and bearer JWT; a lying card."""

from __future__ import annotations

import asyncio
import json
import uuid
from typing import Any
from urllib.parse import quote

import httpx
import pytest
from a2a.client import A2ACardResolver, ClientConfig, ClientFactory
from a2a.types import GetTaskRequest, Message, Part, Role, SendMessageRequest, TaskState

from tests.auth.jwt_support import rules_for
from tests.dataplane.support import deploy, new_session_id, seeded_server
from tests.protocols.support import SESSION_HEADER, SigV4Httpx, admin_key
from tests.support.idp_common import RunningIdp
from tests.support.server import HangarServer

A2A = {"serverProtocol": "A2A"}


def base_url(server: HangarServer, runtime: dict[str, Any]) -> str:
    return f"{server.url}/runtimes/{quote(runtime['agentRuntimeArn'], safe='')}/invocations"


@pytest.fixture(scope="module")
def shouter(control: Any) -> dict[str, Any]:
    return deploy(control, "a2a_agent", protocolConfiguration=A2A)


def user_message(text: str) -> SendMessageRequest:
    message = Message(role=Role.ROLE_USER, parts=[Part(text=text)], message_id=str(uuid.uuid4()))
    return SendMessageRequest(message=message)


async def converse(url: str, auth: httpx.Auth, streaming: bool) -> dict[str, Any]:
    """Discover the card through Hangar, send one message, fetch its task: what a caller of the agent does."""
    content_types: list[str] = []

    async def hook(response: httpx.Response) -> None:
        if response.request.method == "POST":
            content_types.append(response.headers.get("content-type", ""))

    headers = {SESSION_HEADER: new_session_id()}  # one session: the agent's task store lives in its sandbox
    async with httpx.AsyncClient(auth=auth, headers=headers, timeout=120, event_hooks={"response": [hook]}) as http:
        card = await A2ACardResolver(http, base_url=url).get_agent_card()
        client = ClientFactory(ClientConfig(httpx_client=http, streaming=streaming)).create(card)
        events = [event async for event in client.send_message(user_message("through the hangar"))]
        last = events[-1]
        task_id = last.task.id if last.HasField("task") else last.status_update.task_id
        task = await client.get_task(GetTaskRequest(id=task_id))
        await client.close()
    chunks = [
        part.text
        for event in events
        if event.HasField("artifact_update")
        for part in event.artifact_update.artifact.parts
    ]
    return {
        "card": card,
        "chunks": chunks,
        "kinds": [event.WhichOneof("payload") for event in events],
        "task": task,
        "content_types": content_types,
    }


def test_card_points_back_through_hangar(server: HangarServer, data: Any, shouter: dict[str, Any]) -> None:
    card = data.get_agent_card(agentRuntimeArn=shouter["agentRuntimeArn"], runtimeSessionId=new_session_id())
    (interface,) = card["agentCard"]["supportedInterfaces"]
    assert interface["url"] == base_url(server, shouter)  # the agent wrote http://localhost:9000/
    assert interface["protocolBinding"] == "JSONRPC" and card["agentCard"]["name"] == "shouter"


def test_a2a_client_sends_and_gets_the_task_over_sigv4(server: HangarServer, shouter: dict[str, Any]) -> None:
    found = asyncio.run(converse(base_url(server, shouter), SigV4Httpx(admin_key(server)), streaming=False))
    assert found["card"].supported_interfaces[0].url == base_url(server, shouter)
    assert found["kinds"] == ["task"]
    task = found["task"]
    assert task.status.state == TaskState.TASK_STATE_COMPLETED
    assert [p.text for p in task.status.message.parts] == ["THROUGH THE HANGAR"]
    assert [p.text for p in task.artifacts[0].parts] == ["THROUGH", "THE", "HANGAR"]
    assert all(ct.startswith("application/json") for ct in found["content_types"])


def test_a2a_client_streams_over_sse(server: HangarServer, shouter: dict[str, Any]) -> None:
    found = asyncio.run(converse(base_url(server, shouter), SigV4Httpx(admin_key(server)), streaming=True))
    assert found["chunks"] == ["THROUGH", "THE", "HANGAR"]  # one artifact event per word, in order
    assert found["kinds"].count("artifact_update") == 3 and found["kinds"][-1] == "status_update"
    assert found["content_types"][0].startswith("text/event-stream")
    assert found["task"].status.state == TaskState.TASK_STATE_COMPLETED


def test_a2a_client_with_a_bearer_jwt(server: HangarServer, control: Any, panva_idp: RunningIdp) -> None:
    runtime = deploy(
        control,
        "a2a_agent",
        protocolConfiguration=A2A,
        authorizerConfiguration={"customJWTAuthorizer": rules_for(panva_idp)},
    )
    token = panva_idp.token("agent-client")

    class Bearer(httpx.Auth):
        def auth_flow(self, request: httpx.Request) -> Any:
            request.headers["Authorization"] = f"Bearer {token}"
            yield request

    found = asyncio.run(converse(base_url(server, runtime), Bearer(), streaming=True))
    assert found["chunks"] == ["THROUGH", "THE", "HANGAR"]
    refused = httpx.get(f"{base_url(server, runtime)}/.well-known/agent-card.json", timeout=60)
    assert refused.status_code in (401, 403)


def test_v0_3_method_names_through_hangar(server: HangarServer, shouter: dict[str, Any]) -> None:
    """Clients of the 0.3 protocol (``message/send``, ``message/stream``, ``tasks/get``) are served too."""
    session = {SESSION_HEADER: new_session_id(), "Content-Type": "application/json"}
    message = {"kind": "message", "messageId": "m-1", "role": "user", "parts": [{"kind": "text", "text": "a b"}]}
    with httpx.Client(auth=SigV4Httpx(admin_key(server)), timeout=60, headers=session) as http:
        rpc = {"jsonrpc": "2.0", "id": 1, "method": "message/send", "params": {"message": message}}
        sent = http.post(base_url(server, shouter), content=json.dumps(rpc))
        assert sent.status_code == 200, sent.text
        task = sent.json()["result"]
        assert task["status"]["state"] == "completed"
        rpc = {
            "jsonrpc": "2.0",
            "id": 2,
            "method": "message/stream",
            "params": {"message": {**message, "messageId": "m-2"}},
        }
        with http.stream("POST", base_url(server, shouter), content=json.dumps(rpc)) as streamed:
            assert streamed.headers["content-type"].startswith("text/event-stream")
            events = [json.loads(line[5:]) for line in streamed.iter_lines() if line.startswith("data:")]
        assert events[-1]["result"]["status"]["state"] == "completed"
        rpc = {"jsonrpc": "2.0", "id": 3, "method": "tasks/get", "params": {"id": task["id"]}}
        got = http.post(base_url(server, shouter), content=json.dumps(rpc))
        assert got.json()["result"]["id"] == task["id"]


def test_a_card_that_lies_about_its_url_is_served_with_hangars(server: HangarServer, control: Any, data: Any) -> None:
    liar = deploy(
        control,
        "a2a_agent",
        protocolConfiguration=A2A,
        environmentVariables={"AGENT_URL": "https://attacker.example/a2a"},
    )
    card = data.get_agent_card(agentRuntimeArn=liar["agentRuntimeArn"], runtimeSessionId=new_session_id())
    assert [i["url"] for i in card["agentCard"]["supportedInterfaces"]] == [base_url(server, liar)]
    assert "https://attacker.example/a2a" in server.log_path.read_text()  # the operator is told
    found = asyncio.run(converse(base_url(server, liar), SigV4Httpx(admin_key(server)), streaming=False))
    assert found["task"].status.state == TaskState.TASK_STATE_COMPLETED


def test_card_names_the_public_url_when_one_is_set() -> None:
    """Behind a proxy the card must name the URL callers use, not the one Hangar was asked on."""
    public = "https://agents.example.com/hangar"
    with seeded_server("hangar-a2a-public-", ["a2a_agent"], env={"HANGAR_PUBLIC_URL": public}) as other:
        runtime = deploy(other.boto3_client("bedrock-agentcore-control"), "a2a_agent", protocolConfiguration=A2A)
        card = other.boto3_client("bedrock-agentcore").get_agent_card(
            agentRuntimeArn=runtime["agentRuntimeArn"], runtimeSessionId=new_session_id()
        )
    (interface,) = card["agentCard"]["supportedInterfaces"]
    assert interface["url"] == f"{public}/runtimes/{quote(runtime['agentRuntimeArn'], safe='')}/invocations"
