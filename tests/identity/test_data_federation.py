"""USER_FEDERATION (authorization code + PKCE) and ON_BEHALF_OF_TOKEN_EXCHANGE against a real panva oidc-provider,
with httpx playing each user's browser at the IdP's login and consent forms. Providers and workload identities are
created with boto3 through the control plane; every token request goes through the real server."""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import parse_qs, urlsplit, urlunsplit

import httpx
import jwt
import pytest
from botocore.exceptions import ClientError

from tests.identity.data_idp import (
    EXCHANGE_CLIENT,
    PUBLIC_EXCHANGE_CLIENT,
    WEB_CLIENT,
    consent,
    grants,
    start_flow_idp,
)
from tests.support.idp_common import RunningIdp
from tests.support.server import HangarServer, free_port

TTL_S = 15  # long enough that a cached token is still fresh on a loaded machine; the refresh test waits it out
WORKLOAD = "fed-agent"
PROVIDER = "fed-idp"
EXCHANGE_PROVIDER = "fed-exchange"
RETURN_URL = "http://127.0.0.1:9/app/after-consent"
SCOPES = ["openid", "offline_access", "reports:read"]
ACTOR_CONFIG = {
    "grantType": "TOKEN_EXCHANGE",
    "tokenExchangeGrantTypeConfig": {"actorTokenContent": "M2M", "actorTokenScopes": ["agent:invoke"]},
}
NO_CLIENT_CONFIG = {
    "grantType": "TOKEN_EXCHANGE",
    "onBehalfOfAuthenticationConfig": {"clientAuthenticationMethod": "NO_CLIENT"},
}


@dataclass
class Federation:
    server: HangarServer
    idp: RunningIdp
    control: object
    data: object


@pytest.fixture(scope="module")
def fed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Federation]:
    root: Path = tmp_path_factory.mktemp("federation")
    server = HangarServer(data_dir=root / "data").start()
    control = server.boto3_client("bedrock-agentcore-control")
    data = server.boto3_client("bedrock-agentcore")
    port = free_port()
    issuer = f"http://127.0.0.1:{port}"
    metadata = {
        "issuer": issuer,
        "authorizationEndpoint": f"{issuer}/auth",
        "tokenEndpoint": f"{issuer}/token",
        "responseTypes": ["code"],
    }
    created = control.create_oauth2_credential_provider(
        name=PROVIDER,
        credentialProviderVendor="CustomOauth2",
        oauth2ProviderConfigInput={
            "customOauth2ProviderConfig": {
                "oauthDiscovery": {"authorizationServerMetadata": metadata},
                "clientId": WEB_CLIENT[0],
                "clientSecret": WEB_CLIENT[1],
            }
        },
    )
    callback = created["callbackUrl"]
    assert callback.startswith(server.url + "/identities/oauth2/callback/")
    idp = start_flow_idp(root, [callback], ttl=TTL_S, port=port)
    control.create_oauth2_credential_provider(
        name=EXCHANGE_PROVIDER,
        credentialProviderVendor="CustomOauth2",
        oauth2ProviderConfigInput={
            "customOauth2ProviderConfig": {
                "oauthDiscovery": {"discoveryUrl": idp.discovery_url},
                "clientId": EXCHANGE_CLIENT[0],
                "clientSecret": EXCHANGE_CLIENT[1],
            }
        },
    )
    for name, client, extra in (
        ("fed-actor", EXCHANGE_CLIENT, {"onBehalfOfTokenExchangeConfig": ACTOR_CONFIG}),
        ("fed-jwt-grant", EXCHANGE_CLIENT, {"onBehalfOfTokenExchangeConfig": {"grantType": "JWT_AUTHORIZATION_GRANT"}}),
        ("fed-public", (PUBLIC_EXCHANGE_CLIENT, None), {"onBehalfOfTokenExchangeConfig": NO_CLIENT_CONFIG}),
    ):
        config = {"oauthDiscovery": {"discoveryUrl": idp.discovery_url}, "clientId": client[0], **extra}
        if client[1] is not None:
            config["clientSecret"] = client[1]
        control.create_oauth2_credential_provider(
            name=name,
            credentialProviderVendor="CustomOauth2",
            oauth2ProviderConfigInput={"customOauth2ProviderConfig": config},
        )
    control.create_workload_identity(name=WORKLOAD, allowedResourceOauth2ReturnUrls=[RETURN_URL])
    yield Federation(server, idp, control, data)
    idp.stop()
    server.stop()


def wat_for(fed: Federation, user: str) -> str:
    return fed.data.get_workload_access_token_for_user_id(workloadName=WORKLOAD, userId=user)["workloadAccessToken"]


def start(fed: Federation, user: str, **extra: object) -> dict:
    return fed.data.get_resource_oauth2_token(
        workloadIdentityToken=wat_for(fed, user),
        resourceCredentialProviderName=PROVIDER,
        scopes=SCOPES,
        oauth2Flow="USER_FEDERATION",
        resourceOauth2ReturnUrl=RETURN_URL,
        customParameters={"prompt": "consent"},  # panva issues refresh tokens (offline_access) only with consent
        **extra,
    )


def poll(fed: Federation, user: str, session_uri: str) -> dict:
    return fed.data.get_resource_oauth2_token(
        workloadIdentityToken=wat_for(fed, user),
        resourceCredentialProviderName=PROVIDER,
        scopes=SCOPES,
        oauth2Flow="USER_FEDERATION",
        sessionUri=session_uri,
    )


def verified(fed: Federation, token: str) -> dict:
    keys = jwt.PyJWKClient(f"{fed.idp.issuer}/jwks")
    return jwt.decode(token, keys.get_signing_key_from_jwt(token), algorithms=["RS256"], options={"verify_aud": False})


def browse_back(fed: Federation, authorization_url: str, user: str) -> str:
    """The user consents at the IdP; returns Hangar's callback URL the IdP sent the browser to."""
    return consent(authorization_url, user, stop_at=fed.server.url)


def error_code(excinfo: pytest.ExceptionInfo[ClientError]) -> str:
    return excinfo.value.response["Error"]["Code"]


def test_two_users_each_get_their_own_token(fed: Federation) -> None:
    tokens = {}
    for user in ("alice", "bob"):
        first = start(fed, user, customState=f"app-state-{user}")
        assert first["sessionStatus"] == "IN_PROGRESS"
        assert "accessToken" not in first
        auth_url = first["authorizationUrl"]
        query = parse_qs(urlsplit(auth_url).query)
        assert query["code_challenge_method"] == ["S256"] and query["prompt"] == ["consent"]
        assert poll(fed, user, first["sessionUri"])["sessionStatus"] == "IN_PROGRESS"

        back = httpx.get(browse_back(fed, auth_url, user), follow_redirects=False, timeout=20)
        assert back.status_code == 302, back.text
        landing = urlsplit(back.headers["location"])
        assert urlunsplit((landing.scheme, landing.netloc, landing.path, "", "")) == RETURN_URL
        assert parse_qs(landing.query) == {"session_id": [first["sessionUri"]], "state": [f"app-state-{user}"]}

        # Not bound to a user yet: no token, and nobody else can bind it.
        assert poll(fed, user, first["sessionUri"])["sessionStatus"] == "IN_PROGRESS"
        intruder = "bob" if user == "alice" else "alice"
        with pytest.raises(ClientError) as refused:
            fed.data.complete_resource_token_auth(sessionUri=first["sessionUri"], userIdentifier={"userId": intruder})
        assert error_code(refused) == "AccessDeniedException"
        with pytest.raises(ClientError) as other_user_poll:
            poll(fed, intruder, first["sessionUri"])
        assert error_code(other_user_poll) == "AccessDeniedException"

        fed.data.complete_resource_token_auth(sessionUri=first["sessionUri"], userIdentifier={"userId": user})
        token = poll(fed, user, first["sessionUri"])["accessToken"]
        assert verified(fed, token)["sub"] == user
        again = start(fed, user)  # a fresh call finds the cached token: no new consent
        assert again.get("accessToken") == token
        tokens[user] = token
    assert tokens["alice"] != tokens["bob"]


def test_tampered_or_replayed_state_is_refused(fed: Federation) -> None:
    first = start(fed, "carol")
    callback = browse_back(fed, first["authorizationUrl"], "carol")
    parts = urlsplit(callback)
    query = parse_qs(parts.query)
    state = query["state"][0]
    forged_state = ("A" if state[0] != "A" else "B") + state[1:]
    forged = urlunsplit(parts._replace(query=f"code={query['code'][0]}&state={forged_state}"))
    answer = httpx.get(forged, follow_redirects=False, timeout=20)
    assert answer.status_code == 400 and answer.json()["message"].startswith("The authorization callback's state")
    missing = httpx.get(urlunsplit(parts._replace(query=f"code={query['code'][0]}")), timeout=20)
    assert missing.status_code == 400
    other_provider = urlunsplit(parts._replace(path=parts.path.rsplit("/", 1)[0] + "/" + EXCHANGE_PROVIDER))
    assert httpx.get(other_provider, follow_redirects=False, timeout=20).status_code == 400

    assert httpx.get(callback, follow_redirects=False, timeout=20).status_code == 302  # the real one still works
    replay = httpx.get(callback, follow_redirects=False, timeout=20)
    assert replay.status_code == 400  # a state is good for one callback only
    fed.data.complete_resource_token_auth(sessionUri=first["sessionUri"], userIdentifier={"userId": "carol"})
    assert verified(fed, poll(fed, "carol", first["sessionUri"])["accessToken"])["sub"] == "carol"


def test_return_url_must_be_allowed(fed: Federation) -> None:
    with pytest.raises(ClientError) as refused:
        fed.data.get_resource_oauth2_token(
            workloadIdentityToken=wat_for(fed, "dave"),
            resourceCredentialProviderName=PROVIDER,
            scopes=SCOPES,
            oauth2Flow="USER_FEDERATION",
            resourceOauth2ReturnUrl="https://attacker.example/steal",
        )
    assert error_code(refused) == "ValidationException"


def test_user_token_is_refreshed_after_expiry_without_new_consent(fed: Federation) -> None:
    first = start(fed, "erin")
    httpx.get(browse_back(fed, first["authorizationUrl"], "erin"), follow_redirects=False, timeout=20)
    fed.data.complete_resource_token_auth(sessionUri=first["sessionUri"], userIdentifier={"userId": "erin"})
    token = poll(fed, "erin", first["sessionUri"])["accessToken"]
    expires = verified(fed, token)["exp"]
    refreshes = grants(fed.idp, "refresh_token")
    time.sleep(max(0.0, expires - time.time()) + 1)
    after = start(fed, "erin")
    assert "authorizationUrl" not in after
    assert after["accessToken"] != token and verified(fed, after["accessToken"])["sub"] == "erin"
    assert grants(fed.idp, "refresh_token") == refreshes + 1


def test_force_authentication_starts_a_new_session(fed: Federation) -> None:
    first = start(fed, "frank")
    httpx.get(browse_back(fed, first["authorizationUrl"], "frank"), follow_redirects=False, timeout=20)
    fed.data.complete_resource_token_auth(sessionUri=first["sessionUri"], userIdentifier={"userId": "frank"})
    assert "accessToken" in start(fed, "frank")
    forced = start(fed, "frank", forceAuthentication=True)
    assert forced["sessionStatus"] == "IN_PROGRESS" and forced["sessionUri"] != first["sessionUri"]


def test_user_federation_needs_a_user(fed: Federation) -> None:
    anonymous = fed.data.get_workload_access_token(workloadName=WORKLOAD)["workloadAccessToken"]
    with pytest.raises(ClientError) as refused:
        fed.data.get_resource_oauth2_token(
            workloadIdentityToken=anonymous,
            resourceCredentialProviderName=PROVIDER,
            scopes=SCOPES,
            oauth2Flow="USER_FEDERATION",
        )
    assert error_code(refused) == "ValidationException"


def test_on_behalf_of_token_exchange(fed: Federation) -> None:
    first = start(fed, "grace")
    httpx.get(browse_back(fed, first["authorizationUrl"], "grace"), follow_redirects=False, timeout=20)
    fed.data.complete_resource_token_auth(sessionUri=first["sessionUri"], userIdentifier={"userId": "grace"})
    user_jwt = poll(fed, "grace", first["sessionUri"])["accessToken"]  # grace's own JWT from the IdP

    wat = fed.data.get_workload_access_token_for_jwt(workloadName=WORKLOAD, userToken=user_jwt)["workloadAccessToken"]
    exchanged = fed.data.get_resource_oauth2_token(
        workloadIdentityToken=wat,
        resourceCredentialProviderName=EXCHANGE_PROVIDER,
        scopes=["reports:read"],
        oauth2Flow="ON_BEHALF_OF_TOKEN_EXCHANGE",
        audiences=["urn:hangar:downstream"],
    )["accessToken"]
    claims = verified(fed, exchanged)
    assert claims["sub"] == "grace" and claims["act"] == {"sub": EXCHANGE_CLIENT[0]}
    assert claims["aud"] == "urn:hangar:downstream" and exchanged != user_jwt
    assert "token-exchange for grace by exchange-client" in fed.idp.log()

    # A WAT minted for a bare user id carries no user token to exchange.
    with pytest.raises(ClientError) as refused:
        fed.data.get_resource_oauth2_token(
            workloadIdentityToken=wat_for(fed, "grace"),
            resourceCredentialProviderName=EXCHANGE_PROVIDER,
            scopes=["reports:read"],
            oauth2Flow="ON_BEHALF_OF_TOKEN_EXCHANGE",
        )
    assert error_code(refused) == "ValidationException"


def test_on_behalf_of_variants_from_the_provider_config(fed: Federation) -> None:
    first = start(fed, "heidi")
    httpx.get(browse_back(fed, first["authorizationUrl"], "heidi"), follow_redirects=False, timeout=20)
    fed.data.complete_resource_token_auth(sessionUri=first["sessionUri"], userIdentifier={"userId": "heidi"})
    user_jwt = poll(fed, "heidi", first["sessionUri"])["accessToken"]
    wat = fed.data.get_workload_access_token_for_jwt(workloadName=WORKLOAD, userToken=user_jwt)["workloadAccessToken"]

    def exchange(provider: str) -> dict:
        token = fed.data.get_resource_oauth2_token(
            workloadIdentityToken=wat,
            resourceCredentialProviderName=provider,
            scopes=["reports:read"],
            oauth2Flow="ON_BEHALF_OF_TOKEN_EXCHANGE",
        )["accessToken"]
        return verified(fed, token)

    with_actor = exchange("fed-actor")  # RFC 8693 with an M2M actor token the IdP verifies
    assert with_actor["sub"] == "heidi" and with_actor["act"] == {"sub": EXCHANGE_CLIENT[0]}
    assert "token-exchange actor exchange-client" in fed.idp.log()
    bearer = exchange("fed-jwt-grant")  # RFC 7523: the user's JWT as the assertion
    assert bearer["sub"] == "heidi" and "act" not in bearer
    assert "jwt-bearer for heidi by exchange-client" in fed.idp.log()
    public = exchange("fed-public")  # NO_CLIENT: no client secret sent (the IdP's client has none)
    assert public["sub"] == "heidi" and public["client_id"] == PUBLIC_EXCHANGE_CLIENT
