"""MCP through Hangar with the official ``mcp`` client (streamable HTTP), SigV4 and bearer JWT, stateless and
stateful servers, JSON and SSE answers; the client's closing DELETE; hostile MCP traffic."""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import httpx
import httpx2
import pytest
from mcp.client.session import ClientSession
from mcp.client.streamable_http import streamable_http_client

from tests.auth.jwt_support import rules_for
from tests.dataplane.support import deploy, sessions, wait_for
from tests.protocols.support import SESSION_HEADER, SigV4Httpx, SigV4Httpx2, admin_key, invocations_url
from tests.support.idp_common import RunningIdp
from tests.support.server import HangarServer

MCP = {"serverProtocol": "MCP"}


@dataclass
class Seen:
    """What the client's HTTP stack saw: (method, status, Mcp-Session-Id, runtime session id) per exchange."""

    exchanges: list[tuple[str, int, str | None, str | None]] = field(default_factory=list)

    async def hook(self, response: httpx2.Response) -> None:
        headers = response.headers
        self.exchanges.append(
            (response.request.method, response.status_code, headers.get("mcp-session-id"), headers.get(SESSION_HEADER))
        )

    def runtime_sessions(self) -> set[str]:
        return {e[3] for e in self.exchanges if e[0] == "POST" and e[3]}

    def status_of(self, method: str) -> list[int]:
        return [e[1] for e in self.exchanges if e[0] == method]


async def with_client(
    url: str,
    auth: httpx2.Auth,
    work: Callable[[ClientSession], Awaitable[Any]],
    headers: dict[str, str] | None = None,
) -> tuple[Any, Seen]:
    seen = Seen()
    async with (
        httpx2.AsyncClient(
            auth=auth, headers=headers, timeout=httpx2.Timeout(60, read=120), event_hooks={"response": [seen.hook]}
        ) as http,
        streamable_http_client(url, http_client=http) as (read, write),
        ClientSession(read, write) as session,
    ):
        await session.initialize()
        result = await work(session)
    return result, seen


class Bearer(httpx2.Auth):
    def __init__(self, token: str) -> None:
        self.token = token

    def auth_flow(self, request: httpx2.Request) -> Any:
        request.headers["Authorization"] = f"Bearer {self.token}"
        yield request


def live(server: HangarServer, runtime_id: str) -> list[dict[str, Any]]:
    return [s for s in sessions(server) if s["runtimeId"] == runtime_id and s["state"] != "Terminated"]


def text_of(result: Any) -> str:
    return "".join(getattr(block, "text", "") for block in result.content)


async def tour(session: ClientSession) -> dict[str, Any]:
    """Tools listed and called, progress streamed, and the server's memory kept across calls."""
    tools = sorted(t.name for t in (await session.list_tools()).tools)
    progress: list[tuple[float, float | None, str | None]] = []

    async def on_progress(value: float, total: float | None, message: str | None) -> None:
        progress.append((value, total, message))

    added = await session.call_tool("add", {"a": 2, "b": 40})
    counted = await session.call_tool("count", {"to": 3}, progress_callback=on_progress)
    await session.call_tool("remember", {"note": "one"})
    notes = await session.call_tool("remember", {"note": "two"})
    return {
        "tools": tools,
        "added": text_of(added),
        "counted": text_of(counted),
        "progress": progress,
        "notes": notes.structured_content,
    }


def check_tour(found: dict[str, Any]) -> None:
    assert found["tools"] == ["add", "count", "remember", "whoami"]
    assert found["added"] == "42" and found["counted"] == "counted to 3"
    assert found["notes"] == {"result": ["one", "two"]}  # every call reached the same server process


@pytest.fixture(scope="module")
def stateless(control: Any) -> dict[str, Any]:
    return deploy(control, "mcp_server", protocolConfiguration=MCP)


@pytest.fixture(scope="module")
def stateful(control: Any) -> dict[str, Any]:
    return deploy(control, "mcp_server", protocolConfiguration=MCP, environmentVariables={"MCP_STATEFUL": "1"})


def test_sigv4_client_tours_a_stateless_server_and_delete_ends_the_session(
    server: HangarServer, stateless: dict[str, Any], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="mcp")
    found, seen = asyncio.run(with_client(invocations_url(server, stateless), SigV4Httpx2(admin_key(server)), tour))
    check_tour(found)
    assert found["progress"] == [(1.0, 3.0, "step 1"), (2.0, 3.0, "step 2"), (3.0, 3.0, "step 3")]
    (runtime_session,) = seen.runtime_sessions()  # one Hangar session for the whole MCP session
    mcp_ids = {e[2] for e in seen.exchanges if e[0] == "POST"}
    assert mcp_ids == {runtime_session}  # a stateless server issues none: Hangar's session id stands in
    assert seen.status_of("DELETE") == [204]
    assert not [r for r in caplog.records if "termination failed" in r.getMessage()]
    assert not live(server, stateless["agentRuntimeId"])  # the goodbye stopped the sandbox


def test_stateful_server_keeps_its_own_session_id_on_one_sandbox(
    server: HangarServer, stateful: dict[str, Any]
) -> None:
    found, seen = asyncio.run(with_client(invocations_url(server, stateful), SigV4Httpx2(admin_key(server)), tour))
    check_tour(found)
    (runtime_session,) = seen.runtime_sessions()
    (mcp_id,) = {e[2] for e in seen.exchanges if e[0] == "POST"}
    assert mcp_id and mcp_id != runtime_session  # the server's own id, carried back to the same Hangar session
    assert seen.status_of("DELETE") == [204]
    assert not live(server, stateful["agentRuntimeId"])


def test_bearer_jwt_client_with_json_answers(server: HangarServer, control: Any, panva_idp: RunningIdp) -> None:
    runtime = deploy(
        control,
        "mcp_server",
        protocolConfiguration=MCP,
        environmentVariables={"MCP_STATEFUL": "1", "MCP_JSON": "1"},
        authorizerConfiguration={"customJWTAuthorizer": rules_for(panva_idp)},
    )
    token = panva_idp.token("agent-client")
    found, seen = asyncio.run(with_client(invocations_url(server, runtime), Bearer(token), tour))
    check_tour(found)
    assert found["progress"] == []  # a JSON answer carries no notifications: only the result
    assert seen.status_of("DELETE") == [204]
    assert not live(server, runtime["agentRuntimeId"])
    sigv4 = httpx.post(
        invocations_url(server, runtime),
        headers=MCP_HEADERS,
        content=_rpc("tools/list"),
        auth=SigV4Httpx(admin_key(server)),
        timeout=60,
    )
    assert sigv4.status_code == 403, sigv4.text  # a JWT runtime takes no SigV4, whatever the protocol


def test_a_hundred_concurrent_clients_on_one_runtime(server: HangarServer, stateful: dict[str, Any]) -> None:
    """Every client opens its own MCP session in one shared Hangar session (the runtime session header is sent):
    a hundred server-issued ids, all answered, and the last goodbye stops the sandbox."""
    shared = f"mcp-crowd-{'x' * 40}"
    url = invocations_url(server, stateful)
    auth = SigV4Httpx2(admin_key(server))

    async def one(n: int) -> tuple[str, str | None]:
        async def work(session: ClientSession) -> str:
            return text_of(await session.call_tool("add", {"a": n, "b": 1}))

        answer, seen = await with_client(url, auth, work, headers={SESSION_HEADER: shared})
        assert seen.status_of("DELETE") == [204]
        return answer, next(e[2] for e in seen.exchanges if e[0] == "POST")

    async def crowd() -> list[tuple[str, str | None]]:
        return await asyncio.gather(*(one(n) for n in range(100)))

    results = asyncio.run(crowd())
    assert [r[0] for r in results] == [str(n + 1) for n in range(100)]
    assert len({r[1] for r in results}) == 100
    assert not live(server, stateful["agentRuntimeId"])


def _rpc(method: str, params: dict[str, Any] | None = None, ident: int = 1) -> bytes:
    return json.dumps({"jsonrpc": "2.0", "id": ident, "method": method, "params": params or {}}).encode()


MCP_HEADERS = {"Content-Type": "application/json", "Accept": "application/json, text/event-stream"}


def rpc_answer(response: httpx.Response) -> dict[str, Any]:
    """The JSON-RPC answer of a JSON or SSE response (the last ``data:`` event that has an id)."""
    if response.headers["content-type"].startswith("application/json"):
        return dict(response.json())
    events = [json.loads(line[5:]) for line in response.text.splitlines() if line.startswith("data:")]
    return next(e for e in reversed(events) if "id" in e)


def test_hostile_mcp_traffic_gets_clear_errors(
    server: HangarServer, control: Any, stateless: dict[str, Any], stateful: dict[str, Any], panva_idp: RunningIdp
) -> None:
    auth = SigV4Httpx(admin_key(server))
    with httpx.Client(auth=auth, timeout=60) as http:
        before = len(live(server, stateless["agentRuntimeId"]))
        unknown = http.post(
            invocations_url(server, stateless),
            headers={**MCP_HEADERS, "Mcp-Session-Id": "never-issued"},
            content=_rpc("tools/list"),
        )
        assert unknown.status_code == 404 and unknown.headers["x-amzn-ErrorType"] == "ResourceNotFoundException"
        assert "initialize a new one" in unknown.json()["message"]
        assert len(live(server, stateless["agentRuntimeId"])) == before  # nothing was started for it

        malformed = http.post(invocations_url(server, stateless), headers=MCP_HEADERS, content=b'{"jsonrpc": "2.0",')
        assert malformed.status_code == 424, malformed.text
        assert "Received error (400) from the agent" in malformed.json()["message"]
        assert len(live(server, stateless["agentRuntimeId"])) == before  # the session made up for it is gone

        # an MCP session opened on the stateful runtime, then reused elsewhere
        opened = http.post(invocations_url(server, stateful), headers=MCP_HEADERS, content=_rpc("initialize", {
            "protocolVersion": "2025-06-18", "capabilities": {}, "clientInfo": {"name": "raw", "version": "0"},
        }))  # fmt: skip
        assert opened.status_code == 200, opened.text
        mcp_id = opened.headers["mcp-session-id"]
        elsewhere = http.post(
            invocations_url(server, stateless), headers={**MCP_HEADERS, "Mcp-Session-Id": mcp_id}, content=_rpc("ping")
        )
        assert elsewhere.status_code == 404
        deleted = http.delete(invocations_url(server, stateful), headers={"Mcp-Session-Id": mcp_id})
        assert deleted.status_code == 204
        again = http.delete(invocations_url(server, stateful), headers={"Mcp-Session-Id": mcp_id})
        assert again.status_code == 404
        no_id = http.delete(invocations_url(server, stateful))
        assert no_id.status_code == 400 and "Mcp-Session-Id" in no_id.json()["message"]

    # another user: the id of agent-client's MCP session is unknown to other-client
    runtime = deploy(
        control,
        "mcp_server",
        protocolConfiguration=MCP,
        authorizerConfiguration={
            "customJWTAuthorizer": rules_for(panva_idp, allowedClients=["agent-client", "other-client"])
        },
    )
    url = invocations_url(server, runtime)
    owner = {"Authorization": f"Bearer {panva_idp.token('agent-client')}"}
    stranger = {"Authorization": f"Bearer {panva_idp.token('other-client')}"}
    first = httpx.post(url, headers={**MCP_HEADERS, **owner}, content=_rpc("tools/list"), timeout=60)
    assert first.status_code == 200, first.text
    mcp_id = first.headers["mcp-session-id"]
    stolen = httpx.post(
        url, headers={**MCP_HEADERS, **stranger, "Mcp-Session-Id": mcp_id}, content=_rpc("tools/list"), timeout=60
    )
    assert stolen.status_code == 404
    mine = httpx.post(
        url, headers={**MCP_HEADERS, **owner, "Mcp-Session-Id": mcp_id}, content=_rpc("tools/list"), timeout=60
    )
    assert mine.status_code == 200 and mine.headers[SESSION_HEADER] == first.headers[SESSION_HEADER]
    assert httpx.delete(url, headers={**owner, "Mcp-Session-Id": mcp_id}, timeout=60).status_code == 204


def test_client_gone_mid_stream_leaves_a_healthy_server(server: HangarServer, stateless: dict[str, Any]) -> None:
    auth = SigV4Httpx(admin_key(server))
    url = invocations_url(server, stateless)
    with httpx.Client(auth=auth, timeout=60) as http:
        call = _rpc(
            "tools/call", {"name": "count", "arguments": {"to": 200, "delay": 0.05}, "_meta": {"progressToken": 1}}
        )
        with http.stream("POST", url, headers=MCP_HEADERS, content=call) as streamed:
            assert streamed.status_code == 200
            assert streamed.headers["content-type"].startswith("text/event-stream")
            runtime_session = streamed.headers[SESSION_HEADER]
            next(streamed.iter_lines())  # the first progress event, then the client goes away

        def idle() -> bool:
            state = {s["runtimeSessionId"]: s["state"] for s in live(server, stateless["agentRuntimeId"])}
            return state.get(runtime_session) == "Idle"

        wait_for(idle, timeout=60)
        after = http.post(
            url, headers={**MCP_HEADERS, SESSION_HEADER: runtime_session}, content=_rpc("tools/call", {
                "name": "add", "arguments": {"a": 1, "b": 1}})
        )  # fmt: skip
        assert after.status_code == 200 and rpc_answer(after)["result"]["content"][0]["text"] == "2"
        assert httpx.get(f"{server.url}/healthz").status_code == 200
        gone = http.delete(url, headers={"Mcp-Session-Id": after.headers["mcp-session-id"]})
        assert gone.status_code == 204
