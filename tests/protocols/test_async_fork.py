"""Agents that serve from async code start by fork (issue 18): FastMCP/``MCPServer.run`` (``anyio.run`` →
``uvicorn.Server.serve``), a FastAPI app under ``asyncio.run(main())`` (AgentCore's streaming tutorial shape), beside
the A2A (a2a-sdk) and AG-UI (ag-ui-protocol) examples. Each through Hangar with the official clients; each session's
``startKind`` read from the operator API; state made at import is each session's own copy."""

from __future__ import annotations

import asyncio
import json
import shutil
from collections.abc import Callable
from typing import Any, TypeVar
from urllib.parse import quote

import httpx
import pytest
import websockets
from a2a.client import A2ACardResolver, ClientConfig, ClientFactory
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials

from tests.dataplane.support import BUCKET, deploy, new_session_id, sessions, wait_for
from tests.protocols.support import SESSION_HEADER, SigV4Httpx, SigV4Httpx2, admin_key, invocations_url
from tests.protocols.test_a2a import user_message
from tests.protocols.test_fork_starts import RUN
from tests.protocols.test_mcp import text_of, with_client
from tests.support.agent_env import AGENTS, EXAMPLES
from tests.support.server import HangarServer

T = TypeVar("T")
MCP = {"serverProtocol": "MCP"}


@pytest.fixture(scope="module", autouse=True)
def isolating(server: HangarServer) -> None:
    if not httpx.get(f"{server.url}/healthz", timeout=30).json()["sandbox"]["isolates"]:
        pytest.skip("the process backend cannot fork templates")


def record_of(server: HangarServer, session_id: str) -> dict[str, Any]:
    (record,) = [s for s in sessions(server) if s["runtimeSessionId"] == session_id]
    return record


def forked(server: HangarServer, call: Callable[[str], tuple[str, T]], timeout: float = 180) -> T:
    """Run ``call`` (new session id → (the Hangar session it used, its result)) until a session started by fork
    answers it (the version's template starts beside the first, cold, sessions); the forked session's result."""
    seen: list[tuple[str, str | None]] = []

    def attempt() -> tuple[T] | None:
        session_id, result = call(new_session_id())
        record = record_of(server, session_id)
        seen.append((record["startKind"], record.get("coldReason")))
        return (result,) if record["startKind"] == "fork" else None

    try:
        return wait_for(attempt, timeout=timeout, interval=0.5)[0]
    except AssertionError:
        pytest.fail(f"no session started by fork: {seen}")


# --- MCP: the example as AgentCore documents it (mcp.run), stateless and stateful, and FastMCP of mcp 1.x


@pytest.fixture(scope="module")
def mcp_stateless(control: Any) -> dict[str, Any]:
    return deploy(control, "mcp_server", protocolConfiguration=MCP)


@pytest.fixture(scope="module")
def mcp_stateful(control: Any) -> dict[str, Any]:
    return deploy(control, "mcp_server", protocolConfiguration=MCP, environmentVariables={"MCP_STATEFUL": "1"})


def mcp_session(server: HangarServer, runtime: dict[str, Any], note: str) -> tuple[str, dict[str, Any]]:
    async def work(session: Any) -> dict[str, Any]:
        tools = sorted(t.name for t in (await session.list_tools()).tools)
        notes = await session.call_tool("remember", {"note": note})
        added = await session.call_tool("add", {"a": 2, "b": 40})
        return {"tools": tools, "notes": notes.structured_content, "added": text_of(added)}

    found, seen = asyncio.run(with_client(invocations_url(server, runtime), SigV4Httpx2(admin_key(server)), work))
    (runtime_session,) = seen.runtime_sessions()
    return runtime_session, found


@pytest.mark.parametrize("shape", ["stateless", "stateful"])
def test_mcp_run_sessions_fork_and_keep_their_own_memory(
    server: HangarServer, request: pytest.FixtureRequest, shape: str
) -> None:
    runtime = request.getfixturevalue(f"mcp_{shape}")
    first = forked(server, lambda _: mcp_session(server, runtime, "first"))
    second = forked(server, lambda _: mcp_session(server, runtime, "second"))
    assert first["tools"] == ["add", "count", "remember", "whoami"] and first["added"] == "42"
    assert first["notes"] == {"result": ["first"]} and second["notes"] == {"result": ["second"]}


def test_fastmcp_1x_run_sessions_fork(server: HangarServer, control: Any, data: Any) -> None:
    target = server.data_dir / "artifacts" / BUCKET / "mcp_server_async_v1"
    shutil.copytree(EXAMPLES / "mcp_server", target, ignore=shutil.ignore_patterns("__pycache__"), dirs_exist_ok=True)
    (target / "requirements.txt").write_text("mcp>=1.25,<2\n")
    runtime = deploy(control, "mcp_server_async_v1", protocolConfiguration=MCP)

    def call(session_id: str) -> tuple[str, list[str]]:
        body = {"jsonrpc": "2.0", "id": 1, "method": "tools/call", "params": {"name": "remember", "arguments": {}}}
        body["params"]["arguments"] = {"note": session_id[-8:]}  # type: ignore[index]
        answer = data.invoke_agent_runtime(
            agentRuntimeArn=runtime["agentRuntimeArn"],
            runtimeSessionId=session_id,
            payload=json.dumps(body),
            contentType="application/json",
            accept="application/json, text/event-stream",
        )
        raw = answer["response"].read().decode()
        payload = json.loads(raw.split("data: ", 1)[1]) if "data: " in raw else json.loads(raw)
        return session_id, [session_id[-8:], payload["result"]["structuredContent"]["result"]]

    note, notes = forked(server, call)
    assert notes == [note]  # a notes list made at import holds only this session's note


# --- a FastAPI app served by asyncio.run(main()) → uvicorn.Server.serve, with a WebSocket


@pytest.fixture(scope="module")
def fastapi_async(server: HangarServer, control: Any) -> dict[str, Any]:
    target = server.data_dir / "artifacts" / BUCKET / "asyncfastapi"
    shutil.copytree(AGENTS / "asyncfastapi", target, ignore=shutil.ignore_patterns("__pycache__"), dirs_exist_ok=True)
    return deploy(control, "asyncfastapi")


def test_fastapi_under_asyncio_run_forks_with_state_of_its_own(
    server: HangarServer, data: Any, fastapi_async: dict[str, Any]
) -> None:
    def call(session_id: str) -> tuple[str, dict[str, Any]]:
        answer = data.invoke_agent_runtime(
            agentRuntimeArn=fastapi_async["agentRuntimeArn"],
            runtimeSessionId=session_id,
            payload=json.dumps({"prompt": session_id}),
        )
        return session_id, {**json.loads(answer["response"].read()), "session": session_id}

    first, second = forked(server, call), forked(server, call)
    assert first["hits"] == [first["session"]] and second["hits"] == [second["session"]]
    assert first["token"] == second["token"]  # made once, at import, in the template both were forked from
    assert first["setup"] == "set up" and first["threads"] == ["MainThread"]


def test_fastapi_under_asyncio_run_websocket_in_a_forked_session(
    server: HangarServer, data: Any, fastapi_async: dict[str, Any]
) -> None:
    url = f"ws://127.0.0.1:{server.port}/runtimes/{quote(fastapi_async['agentRuntimeArn'], safe='')}/ws"

    def call(session_id: str) -> tuple[str, str]:
        request = AWSRequest(method="GET", url=url.replace("ws://", "http://"), headers={SESSION_HEADER: session_id})
        SigV4Auth(Credentials(*admin_key(server)), "bedrock-agentcore", "us-west-2").add_auth(request)
        headers = {k: v for k, v in request.headers.items() if k.lower() != "host"}

        async def talk() -> str:
            async with websockets.connect(url, additional_headers=headers) as ws:
                await ws.send("hello")
                return str(await ws.recv())

        return session_id, asyncio.run(talk())

    assert forked(server, call) == "echo: hello"


# --- A2A: the example (a2a-sdk) and bedrock_agentcore's own serve_a2a helper; the AG-UI example (ag-ui-protocol)


def a2a_conversation(server: HangarServer, runtime: dict[str, Any]) -> Callable[[str], tuple[str, list[Any]]]:
    """One message/send through the official a2a client, in the given session; the events it got."""
    url = f"{server.url}/runtimes/{quote(runtime['agentRuntimeArn'], safe='')}/invocations"

    def call(session_id: str) -> tuple[str, list[Any]]:
        async def converse() -> list[Any]:
            headers = {SESSION_HEADER: session_id}
            async with httpx.AsyncClient(auth=SigV4Httpx(admin_key(server)), headers=headers, timeout=120) as http:
                card = await A2ACardResolver(http, base_url=url).get_agent_card()
                client = ClientFactory(ClientConfig(httpx_client=http, streaming=False)).create(card)
                events = [event async for event in client.send_message(user_message("forked and loud"))]
                await client.close()
            return events

        return session_id, asyncio.run(converse())

    return call


def test_a2a_example_forks_and_answers_the_a2a_client(server: HangarServer, control: Any) -> None:
    runtime = deploy(control, "a2a_agent", protocolConfiguration={"serverProtocol": "A2A"})
    events = forked(server, a2a_conversation(server, runtime))
    assert events[-1].WhichOneof("payload") in ("task", "status_update")  # the example answers with a task


def test_bedrock_agentcore_serve_a2a_forks_with_state_of_its_own(server: HangarServer, control: Any) -> None:
    target = server.data_dir / "artifacts" / BUCKET / "agentcorea2a"
    shutil.copytree(AGENTS / "agentcorea2a", target, ignore=shutil.ignore_patterns("__pycache__"), dirs_exist_ok=True)
    runtime = deploy(control, "agentcorea2a", protocolConfiguration={"serverProtocol": "A2A"})
    (event,) = forked(server, a2a_conversation(server, runtime))
    assert [part.text for part in event.message.parts] == ["seen 1"]  # the import's list, this session's copy


def agui_snapshots(data: Any, runtime: dict[str, Any], field: str) -> Callable[[str], tuple[str, list[int]]]:
    """Two AG-UI runs in the given session (SSE through boto3); ``field`` of each run's state snapshot."""

    def call(session_id: str) -> tuple[str, list[int]]:
        seen = []
        for _ in range(2):
            answer = data.invoke_agent_runtime(
                agentRuntimeArn=runtime["agentRuntimeArn"], runtimeSessionId=session_id, payload=json.dumps(RUN)
            )
            events = [json.loads(line[5:]) for line in answer["response"].iter_lines() if line.startswith(b"data:")]
            seen += [e["snapshot"][field] for e in events if e["type"] == "STATE_SNAPSHOT"]
        return session_id, seen

    return call


def test_agui_example_forks_with_turns_of_its_own(server: HangarServer, control: Any, data: Any) -> None:
    runtime = deploy(control, "agui_agent", protocolConfiguration={"serverProtocol": "AGUI"})
    # the thread's turns start from the import's empty dict in every session
    assert forked(server, agui_snapshots(data, runtime, "turns")) == [1, 2]


def test_bedrock_agentcore_agui_app_forks_with_state_of_its_own(server: HangarServer, control: Any, data: Any) -> None:
    target = server.data_dir / "artifacts" / BUCKET / "agentcoreagui"
    shutil.copytree(AGENTS / "agentcoreagui", target, ignore=shutil.ignore_patterns("__pycache__"), dirs_exist_ok=True)
    runtime = deploy(control, "agentcoreagui", protocolConfiguration={"serverProtocol": "AGUI"})
    assert forked(server, agui_snapshots(data, runtime, "runs")) == [1, 2]
