"""hangar.sdk's identity decorators against a real ``hangar serve`` and a real IdP (panva oidc-provider).

The decorators are pointed at the server with ``BEDROCK_AGENTCORE_DP_ENDPOINT`` and sign with its admin key, as an
agent on a developer's machine would; providers and workload identities are created with boto3. The same calls
are also made with the reference SDK's decorators (differential) and with botocore made unimportable (the stdlib
transport an agent without botocore gets).
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import jwt
import pytest
from botocore.exceptions import ClientError

from hangar.sdk import (
    AgentApp,
    BedrockAgentCoreContext,
    IdentityServiceError,
    TokenPoller,
    requires_access_token,
    requires_api_key,
    requires_wat,
)
from hangar.sdk import _identity as identity_module
from tests.sdk.servers import ThreadServer
from tests.support.idp_common import RunningIdp
from tests.support.idp_panva import CLIENTS, start_panva
from tests.support.server import HangarServer, read_admin_key

REPO = Path(__file__).resolve().parents[2]
WORKLOAD = "sdk-decorator-agent"
API_KEY_PROVIDER = "sdk-api-key"
API_KEY = "sk-test-0123456789abcdef"
OAUTH_PROVIDER = "sdk-panva-m2m"
MISSING_PROVIDER = "no-such-provider"


@pytest.fixture(scope="module")
def hangar(tmp_path_factory: pytest.TempPathFactory) -> Iterator[HangarServer]:
    """A real server; these tests start no sandbox, so the process backend spares the data dir's path checks."""
    server = HangarServer(data_dir=tmp_path_factory.mktemp("hangar") / "data", extra_args=["--sandbox", "process"])
    yield server.start()
    server.stop()


@dataclass
class Identity:
    server: HangarServer
    idp: RunningIdp
    wat: str  # a workload access token for WORKLOAD and user "alice"


@pytest.fixture(scope="module")
def panva(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningIdp]:
    idp = start_panva(tmp_path_factory.mktemp("panva"))
    yield idp
    idp.stop()


@pytest.fixture(scope="module")
def identity(hangar: HangarServer, panva: RunningIdp) -> Identity:
    control = hangar.boto3_client("bedrock-agentcore-control")
    control.create_workload_identity(name=WORKLOAD)
    control.create_api_key_credential_provider(name=API_KEY_PROVIDER, apiKey=API_KEY)
    client_id = "agent-client"
    control.create_oauth2_credential_provider(
        name=OAUTH_PROVIDER,
        credentialProviderVendor="CustomOauth2",
        oauth2ProviderConfigInput={
            "customOauth2ProviderConfig": {
                "oauthDiscovery": {"discoveryUrl": panva.discovery_url},
                "clientId": client_id,
                "clientSecret": CLIENTS[client_id],
            }
        },
    )
    data = hangar.boto3_client("bedrock-agentcore")
    wat = data.get_workload_access_token_for_user_id(workloadName=WORKLOAD, userId="alice")["workloadAccessToken"]
    return Identity(server=hangar, idp=panva, wat=wat)


def agent_environment(server: HangarServer) -> dict[str, str]:
    """What an agent on a developer's machine would set to reach this server with the admin key."""
    key_id, secret = read_admin_key(server.credentials_file)
    return {
        "AWS_ACCESS_KEY_ID": key_id,
        "AWS_SECRET_ACCESS_KEY": secret,
        "AWS_REGION": "us-west-2",
        "AWS_EC2_METADATA_DISABLED": "true",
        "BEDROCK_AGENTCORE_DP_ENDPOINT": server.url,
        "BEDROCK_AGENTCORE_CP_ENDPOINT": server.url,
        # The reference SDK reads its BEDROCK_AGENTCORE_* overrides once at import; botocore reads these per client.
        "AWS_ENDPOINT_URL_BEDROCK_AGENTCORE": server.url,
        "AWS_ENDPOINT_URL_BEDROCK_AGENTCORE_CONTROL": server.url,
    }


@pytest.fixture
def agent_env(identity: Identity, monkeypatch: pytest.MonkeyPatch) -> Identity:
    for name in (
        "AWS_SESSION_TOKEN",
        "AWS_PROFILE",
        "DOCKER_CONTAINER",
        "HANGAR_SANDBOX",
        "AWS_CONTAINER_CREDENTIALS_FULL_URI",
    ):
        monkeypatch.delenv(name, raising=False)
    for name, value in agent_environment(identity.server).items():
        monkeypatch.setenv(name, value)
    return identity


@pytest.fixture
def with_wat(agent_env: Identity) -> Iterator[Identity]:
    """The request context a runtime invocation would carry (the test thread's context variables)."""
    BedrockAgentCoreContext.set_workload_access_token(agent_env.wat)
    yield agent_env
    BedrockAgentCoreContext.set_workload_access_token(None)


# -- requires_api_key -----------------------------------------------------------------------------------------


def test_api_key_is_injected_into_sync_and_async_functions(with_wat: Identity) -> None:
    @requires_api_key(provider_name=API_KEY_PROVIDER)
    def sync_tool(query: str, *, api_key: str) -> tuple[str, str]:
        return query, api_key

    @requires_api_key(provider_name=API_KEY_PROVIDER, into="secret")
    async def async_tool(*, secret: str) -> str:
        return secret

    assert sync_tool("q") == ("q", API_KEY)
    assert asyncio.run(async_tool()) == API_KEY
    assert sync_tool.__name__ == "sync_tool" and asyncio.iscoroutinefunction(async_tool)


def test_missing_provider_surfaces_the_aws_error(with_wat: Identity) -> None:
    @requires_api_key(provider_name=MISSING_PROVIDER)
    def tool(*, api_key: str) -> str:
        return api_key

    with pytest.raises(ClientError) as caught:
        tool()
    assert caught.value.response["Error"]["Code"] == "ResourceNotFoundException"
    assert type(caught.value).__name__ == "ResourceNotFoundException"


def test_api_key_through_a_served_app(agent_env: Identity, monkeypatch: pytest.MonkeyPatch) -> None:
    """The WAT comes from the invocation's WorkloadAccessToken header, on every executor the app uses."""

    @requires_api_key(provider_name=API_KEY_PROVIDER)
    def sync_tool(*, api_key: str) -> str:
        return api_key

    @requires_api_key(provider_name=API_KEY_PROVIDER)
    async def async_tool(*, api_key: str) -> str:
        return api_key

    @requires_wat()
    def wat_tool(*, identity_wat: str) -> str:
        return identity_wat

    app = AgentApp()

    @app.entrypoint
    async def invoke(payload: dict[str, Any]) -> dict[str, str]:
        return {"sync": await asyncio.to_thread(sync_tool), "async": await async_tool(), "wat": wat_tool()}

    server = ThreadServer(app).start()
    try:
        answer = httpx.post(
            f"{server.url}/invocations", json={}, headers={"WorkloadAccessToken": agent_env.wat}, timeout=60
        )
        assert answer.status_code == 200, answer.text
        assert answer.json() == {"sync": API_KEY, "async": API_KEY, "wat": agent_env.wat}

        monkeypatch.setenv("HANGAR_SANDBOX", "1")  # inside a sandbox a missing WAT is an error, not a local set-up
        answer = httpx.post(f"{server.url}/invocations", json={}, timeout=60)
        assert answer.status_code == 500
        assert "WorkloadAccessToken header" in answer.json()["error"]
    finally:
        server.stop()


# -- where the WAT comes from ---------------------------------------------------------------------------------


def test_no_wat_in_a_container_or_a_sandbox_is_a_clear_error(
    agent_env: Identity, monkeypatch: pytest.MonkeyPatch
) -> None:
    @requires_api_key(provider_name=API_KEY_PROVIDER)
    def tool(*, api_key: str) -> str:
        return api_key

    @requires_wat(into="token")
    def wat_tool(*, token: str) -> str:
        return token

    monkeypatch.setenv("DOCKER_CONTAINER", "1")
    with pytest.raises(ValueError, match="X-Amzn-Bedrock-AgentCore-Runtime-User-Id"):
        tool()
    monkeypatch.delenv("DOCKER_CONTAINER")
    monkeypatch.setenv("HANGAR_SANDBOX", "1")
    with pytest.raises(ValueError, match="WorkloadAccessToken header"):
        tool()
    with pytest.raises(ValueError, match="No workload access token"):
        wat_tool()
    BedrockAgentCoreContext.set_workload_access_token("given-wat")
    try:
        assert wat_tool() == "given-wat"
    finally:
        BedrockAgentCoreContext.set_workload_access_token(None)


def test_local_development_creates_and_keeps_a_workload_identity(
    agent_env: Identity, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)

    @requires_api_key(provider_name=API_KEY_PROVIDER)
    def tool(*, api_key: str) -> str:
        return api_key

    assert tool() == API_KEY
    config = json.loads((tmp_path / ".agentcore.json").read_text())
    assert set(config) == {"workload_identity_name", "user_id"}
    assert tool() == API_KEY
    assert json.loads((tmp_path / ".agentcore.json").read_text()) == config  # reused, not created again
    control = agent_env.server.boto3_client("bedrock-agentcore-control")
    assert (
        control.get_workload_identity(name=config["workload_identity_name"])["name"] == config["workload_identity_name"]
    )


# -- requires_access_token ------------------------------------------------------------------------------------


def verify_panva_token(idp: RunningIdp, token: str) -> dict[str, Any]:
    keys = jwt.PyJWKClient(httpx.get(idp.discovery_url, timeout=10).json()["jwks_uri"])
    return jwt.decode(
        token, keys.get_signing_key_from_jwt(token).key, algorithms=["RS256"], audience=idp.audience, issuer=idp.issuer
    )


def test_m2m_token_from_a_real_idp(with_wat: Identity) -> None:
    @requires_access_token(provider_name=OAUTH_PROVIDER, scopes=["agent:invoke"], auth_flow="M2M")
    async def async_tool(*, access_token: str) -> str:
        return access_token

    @requires_access_token(provider_name=OAUTH_PROVIDER, scopes=["agent:invoke"], auth_flow="M2M", into="tok")
    def sync_tool(*, tok: str) -> str:
        return tok

    token = asyncio.run(async_tool())
    claims = verify_panva_token(with_wat.idp, token)
    assert claims["client_id"] == "agent-client"
    assert "agent:invoke" in claims["scope"].split()
    assert verify_panva_token(with_wat.idp, sync_tool())["client_id"] == "agent-client"

    async def sync_tool_called_under_a_running_loop() -> str:
        return sync_tool()  # the decorator must not call asyncio.run on this loop's thread

    assert verify_panva_token(with_wat.idp, asyncio.run(sync_tool_called_under_a_running_loop()))


def test_user_federation_hands_the_authorization_url_to_on_auth_url(
    with_wat: Identity, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(identity_module, "POLLING_INTERVAL_SECONDS", 0.05)
    monkeypatch.setattr(identity_module, "POLLING_TIMEOUT_SECONDS", 0.5)
    seen: list[str] = []

    async def show(url: str) -> None:
        seen.append(url)

    @requires_access_token(
        provider_name=OAUTH_PROVIDER,
        scopes=["agent:invoke"],
        auth_flow="USER_FEDERATION",
        on_auth_url=show,
        callback_url="http://127.0.0.1:9/after-consent",
        custom_state="state-from-the-agent",
    )
    async def tool(*, access_token: str) -> str:
        return access_token

    with pytest.raises(asyncio.TimeoutError):  # nobody consents: the default poller gives up
        asyncio.run(tool())
    assert len(seen) == 1
    assert seen[0].startswith(with_wat.idp.issuer)

    class Consented(TokenPoller):
        async def poll_for_token(self) -> str:
            return "token-from-a-custom-poller"

    @requires_access_token(
        provider_name=OAUTH_PROVIDER,
        scopes=["agent:invoke"],
        auth_flow="USER_FEDERATION",
        on_auth_url=seen.append,
        token_poller=Consented(),
        callback_url="http://127.0.0.1:9/after-consent",
    )
    def sync_tool(*, access_token: str) -> str:
        return access_token

    assert sync_tool() == "token-from-a-custom-poller"
    assert len(seen) == 2 and seen[1].startswith(with_wat.idp.issuer)


# -- the same agent function with the reference SDK ------------------------------------------------------------


def test_differential_against_the_reference_sdk(with_wat: Identity) -> None:
    """The same agent functions decorated by bedrock-agentcore and by hangar.sdk, against the same server."""
    from bedrock_agentcore.identity import auth as reference
    from bedrock_agentcore.runtime import BedrockAgentCoreContext as ReferenceContext

    def key_tool(*, api_key: str) -> str:
        return api_key

    async def token_tool(*, access_token: str) -> str:
        return access_token

    def error_of(call: Any) -> tuple[bool, str, str]:
        with pytest.raises(Exception) as caught:
            call()
        return (
            isinstance(caught.value, ClientError),
            type(caught.value).__name__,
            caught.value.response["Error"]["Code"],
        )

    def m2m_claims(token: str) -> tuple[str, str, str]:
        claims = verify_panva_token(with_wat.idp, token)
        return claims["client_id"], claims["scope"], claims["aud"]

    results: dict[str, dict[str, Any]] = {}
    ReferenceContext.set_workload_access_token(with_wat.wat)
    try:
        for name, api_key, access_token in (
            ("reference", reference.requires_api_key, reference.requires_access_token),
            ("hangar", requires_api_key, requires_access_token),
        ):
            m2m = access_token(provider_name=OAUTH_PROVIDER, scopes=["agent:invoke"], auth_flow="M2M")(token_tool)
            no_oauth = access_token(provider_name=MISSING_PROVIDER, scopes=["agent:invoke"], auth_flow="M2M")
            results[name] = {
                "key": api_key(provider_name=API_KEY_PROVIDER)(key_tool)(),
                "key-error": error_of(api_key(provider_name=MISSING_PROVIDER)(key_tool)),
                "m2m": m2m_claims(asyncio.run(m2m())),
                "m2m-error": error_of(lambda decorated=no_oauth(token_tool): asyncio.run(decorated())),
            }
    finally:
        ReferenceContext.set_workload_access_token(None)
    assert results["reference"] == results["hangar"]
    assert results["hangar"]["key"] == API_KEY
    assert results["hangar"]["key-error"] == (True, "ResourceNotFoundException", "ResourceNotFoundException")
    assert results["hangar"]["m2m"][0] == "agent-client"


# -- without botocore --------------------------------------------------------------------------------------------

WITHOUT_BOTOCORE = textwrap.dedent(
    """
    import asyncio, json, sys
    sys.modules["botocore"] = None  # an agent environment with starlette and uvicorn only
    from hangar.sdk import BedrockAgentCoreContext, IdentityServiceError, requires_api_key, requires_access_token

    BedrockAgentCoreContext.set_workload_access_token(sys.argv[1])

    @requires_api_key(provider_name=sys.argv[2])
    def key_tool(*, api_key):
        return api_key

    @requires_access_token(provider_name=sys.argv[3], scopes=["agent:invoke"], auth_flow="M2M")
    async def token_tool(*, access_token):
        return access_token

    out = {"key": key_tool(), "token": asyncio.run(token_tool())}
    try:
        requires_api_key(provider_name="no-such-provider")(lambda api_key: api_key)()
    except IdentityServiceError as exc:
        out["error"] = [type(exc).__name__, exc.code, exc.response["Error"]["Code"], exc.operation_name]
    out["botocore_loaded"] = sys.modules.get("botocore") is not None
    print(json.dumps(out))
    """
)


def test_stdlib_transport_without_botocore(identity: Identity) -> None:
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "BEDROCK_AGENTCORE_"))},
        **agent_environment(identity.server),
        "PYTHONPATH": str(REPO / "src"),
    }
    for name in ("AWS_ENDPOINT_URL_BEDROCK_AGENTCORE", "AWS_ENDPOINT_URL_BEDROCK_AGENTCORE_CONTROL"):
        env.pop(name)  # only the AgentCore override, as an agent in a sandbox would have at most
    done = subprocess.run(
        [sys.executable, "-c", WITHOUT_BOTOCORE, identity.wat, API_KEY_PROVIDER, OAUTH_PROVIDER],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    out = json.loads(done.stdout)
    assert out["key"] == API_KEY
    assert verify_panva_token(identity.idp, out["token"])["client_id"] == "agent-client"
    assert out["error"] == ["ResourceNotFoundException"] * 3 + ["GetResourceApiKey"]
    assert out["botocore_loaded"] is False
    assert issubclass(IdentityServiceError, Exception)


# -- USER_FEDERATION end to end: the user consents while the decorator polls -----------------------------------

RETURN_URL = "http://127.0.0.1:9/agent/after-consent"  # the agent's own page; the browser is stopped before it


def test_user_federation_completes_with_the_default_poller(
    with_wat: Identity, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """on_auth_url plays the user (panva login + consent, driven by httpx) and the agent's return page (which binds
    the session to the user with CompleteResourceTokenAuth); the decorator's own polling then gets the token."""
    from urllib.parse import parse_qs, urlsplit

    from tests.identity.data_idp import WEB_CLIENT, consent, start_flow_idp
    from tests.support.server import free_port

    server = with_wat.server
    provider = "sdk-panva-user"
    idp_port = free_port()
    callback = f"{server.url}/identities/oauth2/callback/{provider}"
    idp = start_flow_idp(tmp_path / "idp", redirect_uris=[callback], ttl=600, port=idp_port)
    try:
        created = server.boto3_client("bedrock-agentcore-control").create_oauth2_credential_provider(
            name=provider,
            credentialProviderVendor="CustomOauth2",
            oauth2ProviderConfigInput={
                "customOauth2ProviderConfig": {
                    "oauthDiscovery": {"discoveryUrl": idp.discovery_url},
                    "clientId": WEB_CLIENT[0],
                    "clientSecret": WEB_CLIENT[1],
                }
            },
        )
        assert created["callbackUrl"] == callback
        monkeypatch.setattr(identity_module, "POLLING_INTERVAL_SECONDS", 0.05)
        monkeypatch.setattr(identity_module, "POLLING_TIMEOUT_SECONDS", 60)
        returned: list[dict[str, list[str]]] = []

        def user_consents(url: str) -> None:
            landed = consent(url, login="alice", stop_at=RETURN_URL)
            query = parse_qs(urlsplit(landed).query)
            returned.append(query)
            server.boto3_client("bedrock-agentcore").complete_resource_token_auth(
                sessionUri=query["session_id"][0], userIdentifier={"userId": "alice"}
            )

        @requires_access_token(
            provider_name=provider,
            scopes=["openid", "agent:invoke"],
            auth_flow="USER_FEDERATION",
            on_auth_url=user_consents,
            callback_url=RETURN_URL,
            custom_state="agent-state-42",
        )
        async def tool(*, access_token: str) -> str:
            return access_token

        token = asyncio.run(tool())
        keys = jwt.PyJWKClient(httpx.get(idp.discovery_url, timeout=10).json()["jwks_uri"])
        claims = jwt.decode(
            token, keys.get_signing_key_from_jwt(token).key, algorithms=["RS256"], audience=idp.audience
        )
        assert claims["sub"] == "alice"
        assert returned[0]["state"] == ["agent-state-42"]
        # Consent given once: the next call gets the stored token without asking the user again.
        assert asyncio.run(tool()) == token
        assert len(returned) == 1
    finally:
        idp.stop()
