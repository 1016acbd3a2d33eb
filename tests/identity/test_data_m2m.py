"""M2M (client credentials) through the real server against both real IdPs, plus the API-key path: providers made
with boto3, tokens verified against the IdP's published keys, cached per workload + scopes, fetched anew after
expiry."""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import jwt
import pytest
from botocore.exceptions import ClientError

from tests.identity.data_idp import M2M_CLIENT, grants, start_flow_idp
from tests.support.idp_common import RunningIdp
from tests.support.idp_glewlwyd import start_glewlwyd
from tests.support.idp_panva import start_panva
from tests.support.server import HangarServer

CLIENT = "agent-client"  # known to both IdPs of tests/support
AWS = Path(sys.executable).parent / "aws"


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[HangarServer]:
    running = HangarServer(data_dir=tmp_path_factory.mktemp("m2m") / "data").start()
    control = running.boto3_client("bedrock-agentcore-control")
    for name in ("m2m-agent", "m2m-other"):
        control.create_workload_identity(name=name)
    yield running
    running.stop()


@pytest.fixture(scope="module", params=["panva", "glewlwyd"])
def idp(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningIdp]:
    start = start_panva if request.param == "panva" else start_glewlwyd
    running = start(tmp_path_factory.mktemp(request.param))
    yield running
    running.stop()


def create_provider(server: HangarServer, name: str, discovery_url: str, client: str, secret: str) -> None:
    server.boto3_client("bedrock-agentcore-control").create_oauth2_credential_provider(
        name=name,
        credentialProviderVendor="CustomOauth2",
        oauth2ProviderConfigInput={
            "customOauth2ProviderConfig": {
                "oauthDiscovery": {"discoveryUrl": discovery_url},
                "clientId": client,
                "clientSecret": secret,
            }
        },
    )


def m2m(server: HangarServer, workload: str, provider: str, scopes: list[str], **extra: object) -> str:
    data = server.boto3_client("bedrock-agentcore")
    wat = data.get_workload_access_token(workloadName=workload)["workloadAccessToken"]
    answer = data.get_resource_oauth2_token(
        workloadIdentityToken=wat, resourceCredentialProviderName=provider, scopes=scopes, oauth2Flow="M2M", **extra
    )
    assert "authorizationUrl" not in answer
    return answer["accessToken"]


def verify(idp: RunningIdp, token: str) -> dict:
    """The token's claims, only if it verifies against the keys the IdP publishes (found through discovery)."""
    import httpx

    jwks_uri = httpx.get(idp.discovery_url, timeout=10).json()["jwks_uri"]
    key = jwt.PyJWKClient(jwks_uri).get_signing_key_from_jwt(token)
    return jwt.decode(token, key, algorithms=["RS256"], issuer=idp.issuer, options={"verify_aud": False})


def test_m2m_token_from_a_real_idp_is_cached(server: HangarServer, idp: RunningIdp) -> None:
    provider = f"m2m-{idp.name.split()[0]}"
    create_provider(server, provider, idp.discovery_url, CLIENT, idp.clients[CLIENT])
    token = m2m(server, "m2m-agent", provider, ["agent:invoke"])
    claims = verify(idp, token)
    assert claims.get("client_id", claims.get("sub")) == CLIENT
    assert "agent:invoke" in str(claims.get("scope", "")) + str(claims.get("aud", ""))

    # Same workload and scopes: the cached token (an IdP issues a fresh, different JWT on every grant).
    assert m2m(server, "m2m-agent", provider, ["agent:invoke"]) == token
    # Another workload, or other scopes, never share it.
    assert m2m(server, "m2m-other", provider, ["agent:invoke"]) != token
    other_scopes = m2m(server, "m2m-agent", provider, ["agent:invoke", "reports:read"])
    assert other_scopes != token and verify(idp, other_scopes)
    # forceAuthentication skips the cache.
    assert m2m(server, "m2m-agent", provider, ["agent:invoke"], forceAuthentication=True) != token
    # The cache holds tokens sealed by the vault, never in clear.
    stored = b"".join(path.read_bytes() for path in server.data_dir.glob("hangar.db*"))
    assert token.encode() not in stored and token.split(".")[2].encode() not in stored

    # A cached row that no longer opens (edited, or sealed with a retired key) is a miss, not an error.
    current = m2m(server, "m2m-agent", provider, ["agent:invoke"])
    with sqlite3.connect(server.data_dir / "hangar.db") as db:
        where = "WHERE workload = 'm2m-agent' AND provider = ?"
        rows = 0
        for rowid, sealed in db.execute(f"SELECT rowid, access_token_sealed FROM identity_tokens {where}", (provider,)):
            edited = bytes(sealed[:-1]) + bytes([sealed[-1] ^ 1])  # one bit of the GCM tag
            rows += db.execute(
                "UPDATE identity_tokens SET access_token_sealed = ? WHERE rowid = ?", (edited, rowid)
            ).rowcount
    assert rows >= 1
    replaced = m2m(server, "m2m-agent", provider, ["agent:invoke"])
    assert replaced != current and verify(idp, replaced)


def test_cached_tokens_survive_a_vault_key_rotation(server: HangarServer, idp: RunningIdp) -> None:
    provider = f"m2m-rotate-{idp.name.split()[0]}"
    create_provider(server, provider, idp.discovery_url, CLIENT, idp.clients[CLIENT])
    token = m2m(server, "m2m-other", provider, ["reports:read"])
    with sqlite3.connect(server.data_dir / "hangar.db") as db:
        before = db.execute(
            "SELECT access_token_sealed FROM identity_tokens WHERE provider = ?", (provider,)
        ).fetchone()
    server.boto3_client("bedrock-agentcore-control").reset_token_vault_key_material(tokenVaultId="default")
    with sqlite3.connect(server.data_dir / "hangar.db") as db:
        after = db.execute("SELECT access_token_sealed FROM identity_tokens WHERE provider = ?", (provider,)).fetchone()
    assert after != before  # re-sealed under the new key (the old one is gone from the key file)
    assert m2m(server, "m2m-other", provider, ["reports:read"]) == token  # and still the cached token


def test_m2m_wrong_client_secret_is_a_clear_error(server: HangarServer, idp: RunningIdp) -> None:
    provider = f"m2m-bad-{idp.name.split()[0]}"
    create_provider(server, provider, idp.discovery_url, CLIENT, "not-the-secret")
    with pytest.raises(ClientError) as refused:
        m2m(server, "m2m-agent", provider, ["agent:invoke"])
    assert refused.value.response["Error"]["Code"] == "ValidationException"
    message = refused.value.response["Error"]["Message"]
    assert provider in message and "failed" in message and "not-the-secret" not in message


def test_m2m_token_is_fetched_anew_after_expiry(server: HangarServer, tmp_path_factory: pytest.TempPathFactory) -> None:
    idp = start_flow_idp(tmp_path_factory.mktemp("short-ttl"), [], ttl=6)
    try:
        create_provider(server, "m2m-short", idp.discovery_url, *M2M_CLIENT)
        token = m2m(server, "m2m-agent", "m2m-short", ["agent:invoke"])
        assert m2m(server, "m2m-agent", "m2m-short", ["agent:invoke"]) == token
        assert grants(idp, "client_credentials") == 1
        time.sleep(max(0.0, verify(idp, token)["exp"] - time.time()) + 1)
        fresh = m2m(server, "m2m-agent", "m2m-short", ["agent:invoke"])
        assert fresh != token and verify(idp, fresh)["exp"] > time.time()
        assert grants(idp, "client_credentials") == 2
    finally:
        idp.stop()


def test_concurrent_misses_make_one_grant(server: HangarServer, tmp_path_factory: pytest.TempPathFactory) -> None:
    idp = start_flow_idp(tmp_path_factory.mktemp("stampede"), [], ttl=600)
    try:
        create_provider(server, "m2m-stampede", idp.discovery_url, *M2M_CLIENT)
        # Clients made up front: creating them in threads races on boto3's default session.
        clients = [server.boto3_client("bedrock-agentcore") for _ in range(8)]
        wat = clients[0].get_workload_access_token(workloadName="m2m-agent")["workloadAccessToken"]

        def fetch(client) -> str:  # type: ignore[no-untyped-def]
            return client.get_resource_oauth2_token(
                workloadIdentityToken=wat,
                resourceCredentialProviderName="m2m-stampede",
                scopes=["reports:read"],
                oauth2Flow="M2M",
            )["accessToken"]

        with ThreadPoolExecutor(max_workers=8) as pool:
            tokens = set(pool.map(fetch, clients))
        assert len(tokens) == 1 and grants(idp, "client_credentials") == 1
    finally:
        idp.stop()


def test_api_key(server: HangarServer) -> None:
    control = server.boto3_client("bedrock-agentcore-control")
    data = server.boto3_client("bedrock-agentcore")
    control.create_api_key_credential_provider(name="weather-key", apiKey="wk-0123456789abcdef")
    wat = data.get_workload_access_token_for_user_id(workloadName="m2m-agent", userId="alice")["workloadAccessToken"]
    answer = data.get_resource_api_key(workloadIdentityToken=wat, resourceCredentialProviderName="weather-key")
    assert answer["apiKey"] == "wk-0123456789abcdef"
    control.update_api_key_credential_provider(name="weather-key", apiKey="wk-rotated")
    again = data.get_resource_api_key(workloadIdentityToken=wat, resourceCredentialProviderName="weather-key")
    assert again["apiKey"] == "wk-rotated"
    with pytest.raises(ClientError) as missing:
        data.get_resource_api_key(workloadIdentityToken=wat, resourceCredentialProviderName="no-such-key")
    assert missing.value.response["Error"]["Code"] == "ResourceNotFoundException"


def test_aws_cli_reaches_the_identity_data_plane(server: HangarServer) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    env.update(
        AWS_SHARED_CREDENTIALS_FILE=str(server.credentials_file),
        AWS_CONFIG_FILE=os.devnull,
        AWS_EC2_METADATA_DISABLED="1",
    )

    def aws(*args: str) -> dict:
        command = [str(AWS), "bedrock-agentcore", *args, "--endpoint-url", server.url, "--region", "us-west-2"]
        done = subprocess.run(command, capture_output=True, text=True, env=env, timeout=120)
        assert done.returncode == 0, done.stderr
        return json.loads(done.stdout)

    server.boto3_client("bedrock-agentcore-control").create_api_key_credential_provider(name="cli-key", apiKey="ck-1")
    wat = aws("get-workload-access-token-for-user-id", "--workload-name", "m2m-agent", "--user-id", "carol")
    answer = aws(
        "get-resource-api-key",
        "--workload-identity-token",
        wat["workloadAccessToken"],
        "--resource-credential-provider-name",
        "cli-key",
    )
    assert answer == {"apiKey": "ck-1"}
