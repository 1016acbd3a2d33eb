"""GetWorkloadAccessTokenForJWT and CompleteResourceTokenAuth with a user token: the JWT is trusted through the
customJWTAuthorizer of the runtime that owns the workload identity (real panva tokens), and only for admins through
its own issuer when no runtime owns it."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import jwt
import pytest
from botocore.exceptions import ClientError

from hangar.domain.errors import HangarError, UnauthorizedError
from tests.identity.data_support import in_process, session
from tests.support.idp_common import RunningIdp
from tests.support.idp_panva import start_panva
from tests.support.server import HangarServer

ROLE = "arn:aws:iam::123456789012:role/agent"
PLAIN_WORKLOAD = "jwt-plain"


@dataclass
class World:
    server: HangarServer
    idp: RunningIdp
    stranger: RunningIdp  # an IdP no runtime trusts
    runtime_id: str
    data: Any


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    root = tmp_path_factory.mktemp("jwt")
    server = HangarServer(data_dir=root / "data").start()
    idp = start_panva(root / "idp")
    stranger = start_panva(root / "stranger", kid="stranger-1")
    control = server.boto3_client("bedrock-agentcore-control")
    # The artifact does not exist: the runtime never becomes READY, its configuration is what counts here.
    created = control.create_agent_runtime(
        agentRuntimeName="jwt_owner",
        agentRuntimeArtifact={
            "codeConfiguration": {
                "code": {"s3": {"bucket": "agents", "prefix": "missing/"}},
                "runtime": "PYTHON_3_11",
                "entryPoint": ["main.py"],
            }
        },
        roleArn=ROLE,
        networkConfiguration={"networkMode": "PUBLIC"},
        authorizerConfiguration={
            "customJWTAuthorizer": {
                "discoveryUrl": idp.discovery_url,
                "allowedAudience": [idp.audience],
                "allowedClients": ["agent-client"],
            }
        },
    )
    control.create_workload_identity(name=PLAIN_WORKLOAD)
    control.create_api_key_credential_provider(name="jwt-key", apiKey="jwt-key-value")
    yield World(server, idp, stranger, created["agentRuntimeId"], server.boto3_client("bedrock-agentcore"))
    stranger.stop()
    idp.stop()
    server.stop()


def wat_claims(token: str) -> dict[str, Any]:
    return json.loads(jwt.utils.base64url_decode(token.split(".")[1]))


def for_jwt(world: World, workload: str, token: str) -> str:
    return world.data.get_workload_access_token_for_jwt(workloadName=workload, userToken=token)["workloadAccessToken"]


def code_of(call: Any) -> str:
    with pytest.raises(ClientError) as refused:
        call()
    return refused.value.response["Error"]["Code"]


def test_runtime_authorizer_decides(world: World) -> None:
    wat = for_jwt(world, world.runtime_id, world.idp.token("agent-client"))
    assert wat_claims(wat)["sub"] == "agent-client" and wat_claims(wat)["wl"] == world.runtime_id
    key = world.data.get_resource_api_key(workloadIdentityToken=wat, resourceCredentialProviderName="jwt-key")
    assert key["apiKey"] == "jwt-key-value"
    # A client the runtime does not allow, and a token of an IdP it does not trust (even for an admin).
    assert code_of(lambda: for_jwt(world, world.runtime_id, world.idp.token("other-client"))) == "AccessDeniedException"
    stranger_token = world.stranger.token("agent-client")
    assert code_of(lambda: for_jwt(world, world.runtime_id, stranger_token)) == "UnauthorizedException"


def test_admin_fallback_to_the_issuer_for_a_workload_without_runtime(world: World) -> None:
    wat = for_jwt(world, PLAIN_WORKLOAD, world.stranger.token("agent-client"))
    assert wat_claims(wat)["sub"] == "agent-client"
    forged = jwt.encode(
        {**wat_claims(wat), "iss": world.stranger.issuer, "sub": "victim", "exp": 4102444800},
        "not-the-idp-key" * 3,
        algorithm="HS256",
    )
    assert code_of(lambda: for_jwt(world, PLAIN_WORKLOAD, forged)) == "UnauthorizedException"


def test_session_uses_its_runtime_authorizer_only(world: World) -> None:
    services = in_process(world.server)
    plane = services.identity_data
    assert plane is not None
    good = world.idp.token("agent-client")

    async def attempts() -> list[Any]:
        results: list[Any] = []
        for principal, workload, token in (
            (session(world.runtime_id), world.runtime_id, good),
            (session(world.runtime_id), world.runtime_id, world.stranger.token("agent-client")),
            (session(PLAIN_WORKLOAD), PLAIN_WORKLOAD, good),  # no runtime authorizer: no issuer fallback
        ):
            try:
                results.append(
                    await plane.get_workload_access_token_for_jwt(
                        principal, {"workloadName": workload, "userToken": token}
                    )
                )
            except HangarError as exc:
                results.append(exc)
        await plane.stop()
        return results

    own, stranger, plain = asyncio.run(attempts())
    assert wat_claims(own["workloadAccessToken"])["sub"] == "agent-client"
    assert isinstance(stranger, UnauthorizedError)
    assert type(plain).__name__ == "AccessDeniedError"


def test_complete_with_a_user_token_must_be_the_same_user(world: World) -> None:
    world.server.boto3_client("bedrock-agentcore-control").create_oauth2_credential_provider(
        name="jwt-fed",
        credentialProviderVendor="CustomOauth2",
        oauth2ProviderConfigInput={
            "customOauth2ProviderConfig": {
                "oauthDiscovery": {"discoveryUrl": world.idp.discovery_url},
                "clientId": "agent-client",
                "clientSecret": world.idp.clients["agent-client"],
            }
        },
    )
    user_token = world.stranger.token("agent-client")
    started = world.data.get_resource_oauth2_token(
        workloadIdentityToken=for_jwt(world, PLAIN_WORKLOAD, user_token),
        resourceCredentialProviderName="jwt-fed",
        scopes=["agent:invoke"],
        oauth2Flow="USER_FEDERATION",
    )
    uri = started["sessionUri"]
    other = world.stranger.token("other-client")  # subject other-client
    with pytest.raises(ClientError) as refused:
        world.data.complete_resource_token_auth(sessionUri=uri, userIdentifier={"userToken": other})
    assert refused.value.response["Error"]["Code"] == "AccessDeniedException"
    # The right user gets past the binding check; the session is not authorized at the IdP yet.
    with pytest.raises(ClientError) as early:
        world.data.complete_resource_token_auth(sessionUri=uri, userIdentifier={"userToken": user_token})
    assert early.value.response["Error"]["Code"] == "ValidationException"
    assert "not authorized yet" in early.value.response["Error"]["Message"]
