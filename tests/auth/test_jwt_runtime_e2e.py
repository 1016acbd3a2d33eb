"""JWT-protected runtimes end to end: real IdP tokens through a real ``hangar serve`` to a real agent.

httpx sends ``Authorization: Bearer`` like any OAuth client; the ``websockets`` client opens ``/ws`` the same way.
Refused requests must never reach the agent: the testbed agent counts its invocations per session.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any
from urllib.parse import quote

import httpx
import pytest
from websockets.exceptions import InvalidStatus
from websockets.sync.client import connect

from tests.auth.jwt_support import rules_for
from tests.auth.signing import presigned_url, send, signed
from tests.dataplane.support import deploy, new_session_id, seeded_server, session_state
from tests.support.idp_common import RunningIdp
from tests.support.server import HangarServer, read_admin_key

SESSION = "X-Amzn-Bedrock-AgentCore-Runtime-Session-Id"


@pytest.fixture(scope="module")
def server() -> Iterator[HangarServer]:
    agents = ["testbed", "websocket_echo"]
    with seeded_server("hangar-auth-e2e-", agents, env={"HANGAR_SANDBOX_BACKEND": "process"}) as hangar:
        yield hangar


@pytest.fixture(scope="module")
def control(server: HangarServer) -> Any:
    return server.boto3_client("bedrock-agentcore-control")


@pytest.fixture(scope="module")
def runtimes(control: Any, panva_idp: RunningIdp, glewlwyd_idp: RunningIdp) -> dict[str, dict[str, Any]]:
    """A JWT testbed and a JWT websocket agent per IdP, and one SigV4-only testbed."""
    found: dict[str, dict[str, Any]] = {
        "sigv4": deploy(control, "testbed"),
        "sigv4-ws": deploy(control, "websocket_echo"),
    }
    for name, idp in (("panva", panva_idp), ("glewlwyd", glewlwyd_idp)):
        authorizer = {"customJWTAuthorizer": rules_for(idp)}
        found[f"{name}-http"] = deploy(control, "testbed", authorizerConfiguration=authorizer)
        found[f"{name}-ws"] = deploy(control, "websocket_echo", authorizerConfiguration=authorizer)
    found["panva-allowlist"] = deploy(
        control,
        "testbed",
        authorizerConfiguration={"customJWTAuthorizer": rules_for(panva_idp)},
        requestHeaderConfiguration={"requestHeaderAllowlist": ["Authorization"]},
    )
    return found


def _url(server: HangarServer, runtime: dict[str, Any], suffix: str = "invocations") -> str:
    return f"{server.url}/runtimes/{quote(runtime['agentRuntimeArn'], safe='')}/{suffix}"


def _invoke(server: HangarServer, runtime: dict[str, Any], session: str, token: str | None) -> httpx.Response:
    headers = {SESSION: session, "Content-Type": "application/json"}
    if token is not None:
        headers["Authorization"] = f"Bearer {token}"
    return httpx.post(_url(server, runtime), headers=headers, content=b'{"action": "count"}', timeout=120)


@pytest.mark.parametrize("name", ["panva", "glewlwyd"])
def test_bearer_invocation_and_refusals_that_never_reach_the_agent(
    server: HangarServer, runtimes: dict[str, dict[str, Any]], request: pytest.FixtureRequest, name: str
) -> None:
    idp: RunningIdp = request.getfixturevalue(f"{name}_idp")
    runtime = runtimes[f"{name}-http"]
    session = new_session_id()
    first = _invoke(server, runtime, session, idp.token("agent-client"))
    assert first.status_code == 200, first.text
    assert first.json()["count"] == 1
    assert "authorization" not in {k.lower() for k in first.json()["headers"] or {}}  # not allowlisted

    admin = read_admin_key(server.credentials_file)
    refusals = [
        (_invoke(server, runtime, session, None), 401, "UnauthorizedException"),
        (_invoke(server, runtime, session, "not-a-token"), 401, "UnauthorizedException"),
        (_invoke(server, runtime, session, idp.token("other-client")), 403, "AccessDeniedException"),
        (
            send(signed("POST", _url(server, runtime), admin, b'{"action": "count"}', {SESSION: session})),
            403,
            "AccessDeniedException",
        ),
    ]
    for response, status, code in refusals:
        assert (response.status_code, response.headers.get("x-amzn-ErrorType")) == (status, code), response.text

    again = _invoke(server, runtime, session, idp.token("agent-client"))
    assert again.status_code == 200 and again.json()["count"] == 2  # none of the refusals was counted

    untouched = new_session_id()
    assert _invoke(server, runtime, untouched, "not-a-token").status_code == 401
    assert session_state(server, runtime["agentRuntimeId"], untouched) is None  # no sandbox was started


def test_authorization_reaches_the_agent_only_when_allowlisted(
    server: HangarServer, runtimes: dict[str, dict[str, Any]], panva_idp: RunningIdp
) -> None:
    token = panva_idp.token("agent-client")
    response = _invoke(server, runtimes["panva-allowlist"], new_session_id(), token)
    assert response.status_code == 200, response.text
    seen = {k.lower(): v for k, v in response.json()["headers"].items()}
    assert seen["authorization"] == f"Bearer {token}"


def test_sigv4_runtime_refuses_bearer_and_accepts_boto3(
    server: HangarServer, runtimes: dict[str, dict[str, Any]], panva_idp: RunningIdp
) -> None:
    runtime = runtimes["sigv4"]
    refused = _invoke(server, runtime, new_session_id(), panva_idp.token("agent-client"))
    assert (refused.status_code, refused.headers["x-amzn-ErrorType"]) == (403, "AccessDeniedException")
    data = server.boto3_client("bedrock-agentcore")
    answer = data.invoke_agent_runtime(
        agentRuntimeArn=runtime["agentRuntimeArn"], runtimeSessionId=new_session_id(), payload=b'{"action": "count"}'
    )
    assert json.loads(answer["response"].read())["count"] == 1


def _ws_url(server: HangarServer, runtime: dict[str, Any]) -> str:
    return _url(server, runtime, "ws").replace("http://", "ws://")


@pytest.mark.parametrize("name", ["panva", "glewlwyd"])
def test_websocket_with_bearer_token(
    server: HangarServer, runtimes: dict[str, dict[str, Any]], request: pytest.FixtureRequest, name: str
) -> None:
    idp: RunningIdp = request.getfixturevalue(f"{name}_idp")
    url = _ws_url(server, runtimes[f"{name}-ws"])
    headers = {"Authorization": f"Bearer {idp.token('agent-client')}", SESSION: new_session_id()}
    with connect(url, additional_headers=headers, open_timeout=60) as socket:
        socket.send("hello over jwt")
        assert socket.recv(timeout=30) == "hello over jwt"

    for bad, status in (({SESSION: new_session_id()}, 401), ({"Authorization": "Bearer x.y.z"}, 401)):
        with pytest.raises(InvalidStatus) as caught:
            connect(url, additional_headers=bad, open_timeout=60)
        assert caught.value.response.status_code == status


def test_websocket_sigv4_on_jwt_runtime_is_refused_and_on_sigv4_runtime_accepted(
    server: HangarServer, runtimes: dict[str, dict[str, Any]]
) -> None:
    admin = read_admin_key(server.credentials_file)
    for form in ("presigned", "headers"):
        for name, accepted in (("panva-ws", False), ("sigv4-ws", True)):
            url = _url(server, runtimes[name], "ws") + f"?{SESSION}={new_session_id()}"
            if form == "presigned":
                target, headers = presigned_url(url, admin).replace("http://", "ws://"), {}
            else:
                target = url.replace("http://", "ws://")
                headers = {k: v for k, v in signed("GET", url, admin).headers.items() if k.lower() != "host"}
            if accepted:
                with connect(target, additional_headers=headers, open_timeout=60) as socket:
                    socket.send(f"{form} ok")
                    assert socket.recv(timeout=30) == f"{form} ok"
            else:
                with pytest.raises(InvalidStatus) as caught:
                    connect(target, additional_headers=headers, open_timeout=60)
                assert caught.value.response.status_code == 403
