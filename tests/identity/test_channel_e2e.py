"""End to end: an unmodified ``bedrock-agentcore`` SDK agent in a Hangar session gets its API key and an M2M token
from a real IdP through the sandbox's identity channel, and a session cannot act for anyone else.

One real ``hangar serve`` (namespace backend), one real panva oidc-provider; the agent is deployed with boto3 and
reached with boto3. Hostile checks run inside the sessions: through the agent's own code and through
InvokeAgentRuntimeCommand.
"""

from __future__ import annotations

import asyncio
import json
import ssl
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import boto3
import httpx
import jwt as pyjwt
import pytest
import websockets
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials
from botocore.exceptions import ClientError

from hangar.sandbox.state import instance_tag
from tests.control.support import read_admin_key, signed
from tests.dataplane.support import deploy, new_session_id, seeded_server, wait_for
from tests.support.idp_common import RunningIdp
from tests.support.idp_panva import start_panva
from tests.support.server import HangarServer

API_KEY = f"sk-test-{uuid.uuid4().hex}"
OTHER_KEY = f"sk-other-{uuid.uuid4().hex}"


@pytest.fixture(scope="module")
def hangar() -> Iterator[HangarServer]:
    with seeded_server("hangar-idchannel-", ("identitysdk",)) as server:
        backend = signed(server, "GET", "/hangar/sessions/").json()["backend"]["backend"]
        if backend != "namespace":
            pytest.skip(f"the identity channel needs the namespace backend, this host has {backend}")
        yield server


@pytest.fixture(scope="module")
def idp(hangar: HangarServer) -> Iterator[RunningIdp]:
    running = start_panva(hangar.data_dir.parent / "idp")
    yield running
    running.stop()


@pytest.fixture(scope="module")
def data(hangar: HangarServer) -> Any:
    return hangar.boto3_client("bedrock-agentcore")


@pytest.fixture(scope="module")
def providers(control: Any, idp: RunningIdp) -> dict[str, str]:
    suffix = uuid.uuid4().hex[:8]
    names = {"api": f"key-{suffix}", "other": f"other-{suffix}", "oauth": f"oauth-{suffix}"}
    control.create_api_key_credential_provider(name=names["api"], apiKey=API_KEY)
    control.create_api_key_credential_provider(name=names["other"], apiKey=OTHER_KEY)
    client_id = "agent-client"
    control.create_oauth2_credential_provider(
        name=names["oauth"],
        credentialProviderVendor="CustomOauth2",
        oauth2ProviderConfigInput={
            "customOauth2ProviderConfig": {
                "oauthDiscovery": {"discoveryUrl": idp.discovery_url},
                "clientId": client_id,
                "clientSecret": idp.clients[client_id],
            }
        },
    )
    return names


def _runtime(control: Any, providers: dict[str, str], **env: str) -> dict[str, Any]:
    variables = {"API_KEY_PROVIDER": providers["api"], "OAUTH2_PROVIDER": providers["oauth"], **env}
    return deploy(control, "identitysdk", environmentVariables=variables)


@pytest.fixture(scope="module")
def cold(control: Any, providers: dict[str, str]) -> dict[str, Any]:
    return _runtime(control, providers, HANGAR_TEMPLATE="off")


@pytest.fixture(scope="module")
def second(control: Any, providers: dict[str, str]) -> dict[str, Any]:
    """Another runtime, hence another workload identity."""
    return _runtime(control, providers, HANGAR_TEMPLATE="off")


def _invoke(data: Any, runtime: dict[str, Any], session_id: str, payload: dict[str, Any], **extra: Any) -> Any:
    answer = data.invoke_agent_runtime(
        agentRuntimeArn=runtime["agentRuntimeArn"], runtimeSessionId=session_id, payload=json.dumps(payload), **extra
    )
    return json.loads(answer["response"].read())


def _command(data: Any, runtime: dict[str, Any], session_id: str, command: str) -> tuple[str, int]:
    response = data.invoke_agent_runtime_command(
        agentRuntimeArn=runtime["agentRuntimeArn"],
        runtimeSessionId=session_id,
        body={"command": command, "timeout": 60},
    )
    chunks = [event["chunk"] for event in response["stream"]]
    out = "".join(
        c["contentDelta"].get("stdout", "") + c["contentDelta"].get("stderr", "") for c in chunks if "contentDelta" in c
    )
    return out, chunks[-1]["contentStop"]["exitCode"]


def _session(hangar: HangarServer, session_id: str) -> dict[str, Any]:
    for entry in signed(hangar, "GET", "/hangar/sessions/").json()["sessions"]:
        if entry["runtimeSessionId"] == session_id:
            return entry
    raise AssertionError(f"no session {session_id}")


# --- what must work


def test_a_cold_session_gets_its_api_key_and_an_m2m_token(
    hangar: HangarServer, data: Any, cold: dict[str, Any], idp: RunningIdp
) -> None:
    session_id = new_session_id()
    assert _invoke(data, cold, session_id, {"action": "api_key"}) == {"api_key": API_KEY}
    assert _session(hangar, session_id)["startKind"] == "cold"
    token = _invoke(data, cold, session_id, {"action": "m2m"})["token"]
    claims = pyjwt.decode(token, options={"verify_signature": False})
    assert claims["iss"] == idp.issuer and claims["client_id"] == "agent-client"
    assert "reports:read" in claims["scope"].split()


def test_the_agent_gets_a_minted_workload_access_token_never_the_callers(data: Any, cold: dict[str, Any]) -> None:
    session_id = new_session_id()
    forged = "eyJhbGciOiJub25lIn0.eyJ3bCI6ImF0dGFja2VyIn0."
    seen = _invoke(
        data,
        cold,
        session_id,
        {"action": "wat"},
    )
    claims = pyjwt.decode(seen["wat"], options={"verify_signature": False})
    assert claims["wl"] == cold["agentRuntimeId"] and "sub" not in claims

    def with_header(request: Any, **_: Any) -> None:
        request.headers["WorkloadAccessToken"] = forged
        request.headers["X-Amzn-Bedrock-AgentCore-Runtime-User-Id"] = "alice"

    data.meta.events.register_first("before-sign.bedrock-agentcore.InvokeAgentRuntime", with_header)
    try:
        seen = _invoke(data, cold, session_id, {"action": "wat"})
    finally:
        data.meta.events.unregister("before-sign.bedrock-agentcore.InvokeAgentRuntime", with_header)
    assert seen["wat"] != forged
    claims = pyjwt.decode(seen["wat"], options={"verify_signature": False})
    assert claims["wl"] == cold["agentRuntimeId"] and claims["sub"] == "alice"  # the admin may name the user


def test_forked_sessions_refresh_to_their_own_credentials_and_get_the_api_key(
    hangar: HangarServer, control: Any, data: Any, providers: dict[str, str]
) -> None:
    """The template imports the agent once (its clients fetch expired template credentials); each fork refreshes
    from its own supervisor on first use."""
    runtime = _runtime(control, providers)

    def forked_session() -> str | None:
        session_id = new_session_id()
        _invoke(data, runtime, session_id, {"action": "wat"})
        if _session(hangar, session_id)["startKind"] == "fork":
            return session_id
        data.stop_runtime_session(agentRuntimeArn=runtime["agentRuntimeArn"], runtimeSessionId=session_id)
        return None

    first = wait_for(forked_session, timeout=120, interval=0.5)
    second = wait_for(forked_session, timeout=120, interval=0.5)
    for session_id in (first, second):
        assert _invoke(data, runtime, session_id, {"action": "api_key"}) == {"api_key": API_KEY}
    assert _invoke(data, runtime, first, {"action": "m2m"})["token"].count(".") == 2
    keys = {_invoke(data, runtime, s, {"action": "credentials"})["AccessKeyId"] for s in (first, second)}
    assert len(keys) == 2 and "ASIAHANGARTEMPLATE00" not in keys
    assert {_session(hangar, s)["startKind"] for s in (first, second)} == {"fork"}


def test_a_bearer_callers_subject_is_the_user_of_the_workload_access_token(
    hangar: HangarServer, control: Any, providers: dict[str, str], idp: RunningIdp
) -> None:
    authorizer = {
        "customJWTAuthorizer": {
            "discoveryUrl": idp.discovery_url,
            "allowedAudience": [idp.audience],
            "allowedClients": ["agent-client"],
        }
    }
    runtime = _runtime(control, providers, HANGAR_TEMPLATE="off")
    control.update_agent_runtime(
        agentRuntimeId=runtime["agentRuntimeId"],
        agentRuntimeArtifact=runtime["agentRuntimeArtifact"],
        roleArn=runtime["roleArn"],
        networkConfiguration=runtime["networkConfiguration"],
        environmentVariables=runtime["environmentVariables"],
        authorizerConfiguration=authorizer,
    )
    wait_for(lambda: control.get_agent_runtime(agentRuntimeId=runtime["agentRuntimeId"])["status"] == "READY")
    token = idp.token("agent-client")
    url = f"{hangar.url}/runtimes/{quote(runtime['agentRuntimeArn'], safe='')}/invocations"
    headers = {
        "Authorization": f"Bearer {token}",
        "X-Amzn-Bedrock-AgentCore-Runtime-Session-Id": new_session_id(),
        "X-Amzn-Bedrock-AgentCore-Runtime-User-Id": "mallory",  # ignored: the token says who the user is
        "OAuth2CallbackUrl": "https://app.example.com/callback",
        "Content-Type": "application/json",
    }
    answer = httpx.post(url, headers=headers, content=b'{"action": "wat"}', timeout=120)
    assert answer.status_code == 200, answer.text
    claims = pyjwt.decode(answer.json()["wat"], options={"verify_signature": False})
    subject = pyjwt.decode(token, options={"verify_signature": False})["sub"]
    assert claims["wl"] == runtime["agentRuntimeId"] and claims["sub"] == subject
    assert "oauth2callbackurl" in answer.json()["headers"] and "workloadaccesstoken" in answer.json()["headers"]


def test_only_an_administrator_may_name_the_user(hangar: HangarServer, cold: dict[str, Any]) -> None:
    created = signed(hangar, "POST", "/hangar/credentials/", body=b'{"name": "ci-bot"}')
    assert created.status_code in (200, 201), created.text
    key = created.json()
    client = boto3.client(
        "bedrock-agentcore",
        endpoint_url=hangar.url,
        region_name="us-west-2",
        aws_access_key_id=key["accessKeyId"],
        aws_secret_access_key=key["secretAccessKey"],
    )
    with pytest.raises(ClientError) as refused:
        client.invoke_agent_runtime(
            agentRuntimeArn=cold["agentRuntimeArn"],
            runtimeSessionId=new_session_id(),
            payload=b'{"action": "wat"}',
            runtimeUserId="alice",
        )
    assert refused.value.response["Error"]["Code"] == "AccessDeniedException"


def test_a_websocket_carries_a_minted_token_and_fetches_the_api_key(hangar: HangarServer, cold: dict[str, Any]) -> None:
    url = f"ws://127.0.0.1:{hangar.port}/runtimes/{quote(cold['agentRuntimeArn'], safe='')}/ws"
    key_id, secret = read_admin_key(hangar.credentials_file)
    request = AWSRequest(
        method="GET",
        url=url.replace("ws://", "http://"),
        headers={"X-Amzn-Bedrock-AgentCore-Runtime-Session-Id": new_session_id(), "WorkloadAccessToken": "forged"},
    )
    SigV4Auth(Credentials(key_id, secret), "bedrock-agentcore", "us-west-2").add_auth(request)
    headers = {k: v for k, v in request.headers.items() if k.lower() != "host"}

    async def talk() -> dict[str, Any]:
        async with websockets.connect(url, additional_headers=headers) as ws:
            await ws.send("go")
            return json.loads(await ws.recv())

    answer = asyncio.run(talk())
    assert answer["api_key"] == API_KEY and answer["wat"] != "forged"
    assert pyjwt.decode(answer["wat"], options={"verify_signature": False})["wl"] == cold["agentRuntimeId"]


# --- hostile sessions


def test_a_session_cannot_get_a_token_for_another_workload(
    hangar: HangarServer, data: Any, cold: dict[str, Any], second: dict[str, Any], providers: dict[str, str]
) -> None:
    mine, theirs = new_session_id(), new_session_id()
    answer = _invoke(data, cold, mine, {"action": "wat_for", "workload": second["agentRuntimeId"]})
    assert answer["error"] == "AccessDeniedException"
    # A WAT of the other workload (as its agent received it) is useless in this session.
    their_wat = _invoke(data, second, theirs, {"action": "wat"})["wat"]
    answer = _invoke(data, cold, mine, {"action": "api_key_with", "wat": their_wat, "provider": providers["api"]})
    assert answer["error"] == "AccessDeniedException", answer
    # A forged one (signed with another key) and an unsigned one are refused.
    forged = pyjwt.encode({"wl": cold["agentRuntimeId"], "exp": 4102444800}, "not-the-key" * 4, algorithm="HS256")
    # An expired one, signed with the installation's real key (read from the host's data dir by this test).
    key = (hangar.data_dir / "identity" / "wat.key").read_bytes()
    own = pyjwt.decode(_invoke(data, cold, mine, {"action": "wat"})["wat"], options={"verify_signature": False})
    expired = pyjwt.encode({**own, "iat": own["iat"] - 7200, "exp": own["iat"] - 3600}, key, algorithm="HS256")
    for wat in (forged, expired, "eyJhbGciOiJub25lIn0.eyJ3bCI6IngifQ."):
        answer = _invoke(data, cold, mine, {"action": "api_key_with", "wat": wat, "provider": providers["api"]})
        assert answer["error"] in ("UnauthorizedException", "AccessDeniedException", "ValidationException"), answer


def test_another_sessions_credentials_are_refused(data: Any, cold: dict[str, Any], providers: dict[str, str]) -> None:
    first, other = new_session_id(), new_session_id()
    stolen = _invoke(data, cold, first, {"action": "credentials"})
    assert stolen["AccessKeyId"].startswith("ASIA")
    own_wat = _invoke(data, cold, other, {"action": "wat"})["wat"]
    answer = _invoke(
        data,
        cold,
        other,
        {"action": "api_key_with", "wat": own_wat, "provider": providers["api"], "credentials": stolen},
    )
    assert answer["error"] == "AccessDeniedException" and "another session" in answer["message"]
    # Its own credentials with the same WAT work: the refusal was about whose keys they are.
    assert _invoke(data, cold, other, {"action": "api_key_with", "wat": own_wat, "provider": providers["api"]}) == {
        "api_key": API_KEY
    }


def test_the_identity_endpoint_serves_identity_operations_only(data: Any, cold: dict[str, Any]) -> None:
    # InvokeAgentRuntime is served too (agent to agent, tests/protocols/test_agent_to_agent.py), but only as the
    # target's resource-based policy allows, and this runtime has none.
    answer = _invoke(data, cold, new_session_id(), {"action": "not_identity", "arn": cold["agentRuntimeArn"]})
    assert answer["error"] == "AccessDeniedException" and "no resource-based policy" in answer["message"], answer


def test_no_secret_of_another_session_or_the_vault_is_visible(
    hangar: HangarServer, data: Any, cold: dict[str, Any]
) -> None:
    first, second_session = new_session_id(), new_session_id()
    theirs = _invoke(data, cold, first, {"action": "credentials"})
    mine = _invoke(data, cold, second_session, {"action": "credentials"})
    assert theirs["AccessKeyId"] != mine["AccessKeyId"]
    out, _ = _command(data, cold, second_session, "cat /proc/*/environ | tr '\\0' '\\n'; env; ps aux 2>&1 || true")
    assert mine["SecretAccessKey"] not in out  # keys are fetched, never put in an environment
    for secret in (theirs["AccessKeyId"], theirs["SecretAccessKey"], theirs["Token"], API_KEY, OTHER_KEY):
        assert secret not in out
    # The host's keys (vault, WAT signing, CA) are not in the sandbox's view at all.
    keys = [hangar.data_dir / "vault.key", hangar.data_dir / "identity" / "wat.key"]
    keys += [hangar.data_dir / "identity-ca" / "ca.key", hangar.data_dir / "hangar.db"]
    assert all(path.exists() for path in keys)  # on the host they are there
    out, code = _command(
        data, cold, second_session, f"cat {' '.join(map(str, keys))} 2>&1; ls -la /run/hangar; touch /run/hangar/x 2>&1"
    )
    assert out.count("No such file") == len(keys) and "Read-only file system" in out and code != 0
    assert sorted(line.split()[-1] for line in out.splitlines() if line.startswith(("s", "-"))) == [
        "ca-bundle.pem",
        "credentials.sock",
        "identity.sock",
    ]
    # Without the version's authorization token the credentials endpoint refuses.
    fetch = (
        'python3 -c "import urllib.request as u, urllib.error as e\n'
        "try: u.urlopen('http://127.0.0.1:9480/hangar/session-credentials')\n"
        "except e.HTTPError as x: print('status', x.code)\""
    )
    out, _ = _command(data, cold, second_session, fetch)
    assert "status 403" in out


def test_a_process_that_is_no_session_sandbox_is_refused(hangar: HangarServer, cold: dict[str, Any]) -> None:
    """This test runs as a host uid that leases no sandbox: both sockets refuse it, whatever it presents."""
    outbound = Path("/run/hangar") / instance_tag(hangar.data_dir) / ".outbound"
    transport = httpx.HTTPTransport(uds=str(outbound / "credentials.sock"))
    with httpx.Client(transport=transport, base_url="http://127.0.0.1:9480") as client:
        answer = client.get("/hangar/session-credentials", headers={"Authorization": "anything"})
    assert answer.status_code == 403
    context = ssl.create_default_context(cafile=str(outbound / "ca-bundle.pem"))
    transport = httpx.HTTPTransport(uds=str(outbound / "identity.sock"), verify=context)
    with httpx.Client(transport=transport, base_url="https://bedrock-agentcore.us-west-2.amazonaws.com") as client:
        answer = client.post("/identities/api-key", json={"resourceCredentialProviderName": "x"})
    assert answer.status_code == 403 and answer.headers["x-amzn-ErrorType"] == "AccessDeniedException"


HOLD_CONNECTIONS = """
import select, socket, time
conns = [socket.create_connection(("127.0.0.1", 9480)) for _ in range(40)]
closed, deadline = set(), time.monotonic() + 60
while len(closed) < 8 and time.monotonic() < deadline:
    ready, _, _ = select.select([c for c in conns if c not in closed], [], [], 1)
    closed.update(c for c in ready if not c.recv(1))
answered = 0
for c in conns:
    if c not in closed:
        c.sendall(b"GET /hangar/session-credentials HTTP/1.1\\r\\nHost: x\\r\\n\\r\\n")
        answered += c.recv(12).startswith(b"HTTP/1.1 403")
print("closed", len(closed), "answered", answered)
"""


def test_a_session_cannot_hold_more_than_its_share_of_host_connections(data: Any, cold: dict[str, Any]) -> None:
    out, _ = _command(data, cold, new_session_id(), f"python3 -c '{HOLD_CONNECTIONS}'")
    assert "closed 8 answered 32" in out, out
