"""The identity control plane through boto3 against a real ``hangar serve``: every operation, its errors,
pagination, and secrets that never come back, never reach the log and never sit in the database in clear."""

from __future__ import annotations

import secrets
from datetime import datetime
from typing import Any

import httpx
import pytest
from botocore.exceptions import ClientError

from tests.control.support import ROLE, container_artifact, unique_name, wait_settled, wait_until
from tests.support.server import HangarServer

ACCOUNT = "123456789012"
REGION = "us-west-2"


def error_of(excinfo: pytest.ExceptionInfo[ClientError]) -> tuple[str, str, int]:
    response = excinfo.value.response
    return response["Error"]["Code"], response["Error"]["Message"], response["ResponseMetadata"]["HTTPStatusCode"]


def body(response: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in response.items() if k != "ResponseMetadata"}


def secret_value() -> str:
    return f"sk-{secrets.token_hex(16)}"


# -- workload identities ---------------------------------------------------------------------------------------


def test_workload_identity_lifecycle(control: Any) -> None:
    created = control.create_workload_identity(
        name="wl.lifecycle-1", allowedResourceOauth2ReturnUrls=["https://app.example/cb"], tags={"team": "a"}
    )
    assert created["ResponseMetadata"]["HTTPStatusCode"] == 201
    arn = (
        f"arn:aws:bedrock-agentcore:{REGION}:{ACCOUNT}"
        ":workload-identity-directory/default/workload-identity/wl.lifecycle-1"
    )
    assert body(created) == {
        "name": "wl.lifecycle-1",
        "workloadIdentityArn": arn,
        "allowedResourceOauth2ReturnUrls": ["https://app.example/cb"],
    }
    got = control.get_workload_identity(name="wl.lifecycle-1")
    assert got["workloadIdentityArn"] == arn
    assert isinstance(got["createdTime"], datetime) and got["createdTime"] == got["lastUpdatedTime"]

    updated = control.update_workload_identity(
        name="wl.lifecycle-1", allowedResourceOauth2ReturnUrls=["https://app.example/cb", "myapp://done"]
    )
    assert updated["allowedResourceOauth2ReturnUrls"] == ["https://app.example/cb", "myapp://done"]
    assert updated["lastUpdatedTime"] >= updated["createdTime"]
    assert control.get_workload_identity(name="wl.lifecycle-1")["allowedResourceOauth2ReturnUrls"][1] == "myapp://done"

    deleted = control.delete_workload_identity(name="wl.lifecycle-1")
    assert deleted["ResponseMetadata"]["HTTPStatusCode"] == 204
    with pytest.raises(ClientError) as missing:
        control.get_workload_identity(name="wl.lifecycle-1")
    assert error_of(missing)[0] == "ResourceNotFoundException"
    with pytest.raises(ClientError) as again:
        control.delete_workload_identity(name="wl.lifecycle-1")
    assert error_of(again)[0] == "ResourceNotFoundException"


def test_workload_identity_errors(control: Any) -> None:
    control.create_workload_identity(name="wl-dup")
    with pytest.raises(ClientError) as duplicate:
        control.create_workload_identity(name="wl-dup")
    assert error_of(duplicate)[0] == "ConflictException"

    with pytest.raises(ClientError) as bad:
        control.create_workload_identity(name="bad name!", allowedResourceOauth2ReturnUrls=["no spaces allowed"])
    code, message, status = error_of(bad)
    assert (code, status) == ("ValidationException", 400)
    assert "2 validation errors" in message
    fields = {f["name"] for f in bad.value.response["fieldList"]}
    assert fields == {"name", "allowedResourceOauth2ReturnUrls.1.member"}

    with pytest.raises(ClientError) as unknown:
        control.update_workload_identity(name="wl-nobody")
    assert error_of(unknown)[0] == "ResourceNotFoundException"


def test_workload_identities_page_through_with_signed_tokens(control: Any) -> None:
    names = {f"wl-page-{i}" for i in range(5)}
    for name in names:
        control.create_workload_identity(name=name)
    seen: list[str] = []
    token: str | None = None
    pages = 0
    while True:
        page = control.list_workload_identities(maxResults=2, **({"nextToken": token} if token else {}))
        assert len(page["workloadIdentities"]) <= 2
        seen += [w["name"] for w in page["workloadIdentities"]]
        pages += 1
        token = page.get("nextToken")
        if token is None:
            break
    assert names <= set(seen) and len(seen) == len(set(seen)) and pages >= 3

    first = control.list_workload_identities(maxResults=1)
    forged = first["nextToken"][:-2] + ("AA" if not first["nextToken"].endswith("AA") else "BB")
    with pytest.raises(ClientError) as bad:
        control.list_workload_identities(maxResults=1, nextToken=forged)
    assert error_of(bad)[0] == "ValidationException"
    with pytest.raises(ClientError) as foreign:  # a token of another listing is refused too
        control.list_api_key_credential_providers(nextToken=first["nextToken"])
    assert error_of(foreign)[0] == "ValidationException"


def test_every_runtime_has_its_workload_identity_until_it_is_deleted(control: Any) -> None:
    runtime = control.create_agent_runtime(
        agentRuntimeName=unique_name("wl"),
        agentRuntimeArtifact=container_artifact(),
        roleArn=ROLE,
        networkConfiguration={"networkMode": "PUBLIC"},
    )
    runtime_id = runtime["agentRuntimeId"]
    identity = control.get_workload_identity(name=runtime_id)
    assert identity["workloadIdentityArn"] == runtime["workloadIdentityDetails"]["workloadIdentityArn"]
    listed = control.list_workload_identities(maxResults=20)["workloadIdentities"]
    assert runtime_id in {w["name"] for w in listed} or "nextToken" in control.list_workload_identities(maxResults=20)
    with pytest.raises(ClientError) as owned:
        control.delete_workload_identity(name=runtime_id)
    assert error_of(owned)[0] == "ValidationException" and "agent runtime" in error_of(owned)[1]

    wait_settled(lambda: control.get_agent_runtime(agentRuntimeId=runtime_id))
    control.delete_agent_runtime(agentRuntimeId=runtime_id)

    def gone() -> dict[str, Any]:
        try:
            control.get_workload_identity(name=runtime_id)
        except ClientError as exc:
            return {"code": exc.response["Error"]["Code"]}
        return {"code": "present"}

    wait_until(gone, lambda answer: answer["code"] == "ResourceNotFoundException")


# -- API-key providers -----------------------------------------------------------------------------------------


def test_api_key_provider_lifecycle(control: Any, hangar: HangarServer) -> None:
    key = secret_value()
    created = control.create_api_key_credential_provider(name="github-key", apiKey=key, tags={"env": "test"})
    assert created["ResponseMetadata"]["HTTPStatusCode"] == 201
    provider_arn = f"arn:aws:acps:{REGION}:{ACCOUNT}:token-vault/default/apikeycredentialprovider/github-key"
    assert body(created) == {
        "apiKeySecretArn": {
            "secretArn": f"arn:aws:secretsmanager:{REGION}:{ACCOUNT}"
            ":secret:bedrock-agentcore-identity!default/apikey/github-key"
        },
        "apiKeySecretSource": "MANAGED",
        "name": "github-key",
        "credentialProviderArn": provider_arn,
    }
    got = control.get_api_key_credential_provider(name="github-key")
    assert got["credentialProviderArn"] == provider_arn and "apiKey" not in got
    new_key = secret_value()
    updated = control.update_api_key_credential_provider(name="github-key", apiKey=new_key)
    assert updated["lastUpdatedTime"] >= got["lastUpdatedTime"]
    listed = control.list_api_key_credential_providers()["credentialProviders"]
    assert [p["credentialProviderArn"] for p in listed if p["name"] == "github-key"] == [provider_arn]

    everything = repr([got, updated, listed])
    assert key not in everything and new_key not in everything

    control.delete_api_key_credential_provider(name="github-key")
    with pytest.raises(ClientError) as missing:
        control.get_api_key_credential_provider(name="github-key")
    assert error_of(missing)[0] == "ResourceNotFoundException"


def test_api_key_provider_errors(control: Any) -> None:
    control.create_api_key_credential_provider(name="dup-key", apiKey="a")
    with pytest.raises(ClientError) as duplicate:
        control.create_api_key_credential_provider(name="dup-key", apiKey="b")
    assert error_of(duplicate)[0] == "ConflictException"

    with pytest.raises(ClientError) as no_key:
        control.create_api_key_credential_provider(name="no-key")
    assert error_of(no_key)[0] == "ValidationException"
    assert [f["name"] for f in no_key.value.response["fieldList"]] == ["apiKey"]

    with pytest.raises(ClientError) as external:
        control.create_api_key_credential_provider(
            name="ext-key", apiKeySecretSource="EXTERNAL", apiKeySecretConfig={"secretId": "s", "jsonKey": "k"}
        )
    assert "MANAGED" in error_of(external)[1]

    with pytest.raises(ClientError) as unknown:
        control.update_api_key_credential_provider(name="nobody-key", apiKey="x")
    assert error_of(unknown)[0] == "ResourceNotFoundException"


def test_too_long_api_key_is_refused_without_being_echoed(control: Any) -> None:
    key = "Z" * 65537
    with pytest.raises(ClientError) as too_long:
        control.create_api_key_credential_provider(name="long-key", apiKey=key)
    code, message, _ = error_of(too_long)
    assert code == "ValidationException" and "65536" in message and "ZZZZ" not in message


def test_api_key_providers_paginate(control: Any) -> None:
    for i in range(4):
        control.create_api_key_credential_provider(name=f"page-key-{i}", apiKey=f"v{i}")
    names: list[str] = []
    kwargs: dict[str, Any] = {"maxResults": 3}
    while True:
        page = control.list_api_key_credential_providers(**kwargs)
        names += [p["name"] for p in page["credentialProviders"]]
        if "nextToken" not in page:
            break
        kwargs["nextToken"] = page["nextToken"]
    assert {f"page-key-{i}" for i in range(4)} <= set(names) and len(names) == len(set(names))


# -- OAuth2 providers ------------------------------------------------------------------------------------------


def test_custom_oauth2_by_discovery_url(control: Any, hangar: HangarServer, metadata_host: str) -> None:
    secret = secret_value()
    discovery = f"{metadata_host}/.well-known/openid-configuration"
    created = control.create_oauth2_credential_provider(
        name="custom-disc",
        credentialProviderVendor="CustomOauth2",
        oauth2ProviderConfigInput={
            "customOauth2ProviderConfig": {
                "oauthDiscovery": {"discoveryUrl": discovery},
                "clientId": "hangar-client",
                "clientSecret": secret,
            }
        },
    )
    assert created["ResponseMetadata"]["HTTPStatusCode"] == 201
    assert created["callbackUrl"] == f"{hangar.url}/identities/oauth2/callback/custom-disc"
    assert created["credentialProviderArn"].endswith(":token-vault/default/oauth2credentialprovider/custom-disc")
    assert created["clientSecretArn"]["secretArn"].endswith("!default/oauth2/custom-disc")
    assert created["oauth2ProviderConfigOutput"] == {
        "customOauth2ProviderConfig": {"oauthDiscovery": {"discoveryUrl": discovery}, "clientId": "hangar-client"}
    }
    got = control.get_oauth2_credential_provider(name="custom-disc")
    assert got["credentialProviderVendor"] == "CustomOauth2" and got["status"] == "READY"
    assert secret not in repr(created) + repr(got)


def test_custom_oauth2_discovery_that_cannot_be_read_is_a_clear_error(control: Any, metadata_host: str) -> None:
    with pytest.raises(ClientError) as bad:
        control.create_oauth2_credential_provider(
            name="custom-broken",
            credentialProviderVendor="CustomOauth2",
            oauth2ProviderConfigInput={
                "customOauth2ProviderConfig": {
                    "oauthDiscovery": {"discoveryUrl": f"{metadata_host}/missing/.well-known/openid-configuration"},
                    "clientId": "c",
                    "clientSecret": "s",
                }
            },
        )
    code, message, _ = error_of(bad)
    assert code == "ValidationException" and "discovery document" in message and "404" in message


def test_custom_oauth2_by_metadata_update_keeps_the_secret_unless_given(control: Any, hangar: HangarServer) -> None:
    metadata = {
        "issuer": "https://idp.example",
        "authorizationEndpoint": "https://idp.example/authorize",
        "tokenEndpoint": "https://idp.example/token",
        "responseTypes": ["code"],
        "tokenEndpointAuthMethods": ["client_secret_basic"],
    }
    config = {"oauthDiscovery": {"authorizationServerMetadata": metadata}, "clientId": "c1", "clientSecret": "s1"}
    control.create_oauth2_credential_provider(
        name="custom-meta",
        credentialProviderVendor="CustomOauth2",
        oauth2ProviderConfigInput={"customOauth2ProviderConfig": config},
    )
    updated = control.update_oauth2_credential_provider(
        name="custom-meta",
        credentialProviderVendor="CustomOauth2",
        oauth2ProviderConfigInput={
            "customOauth2ProviderConfig": {
                "oauthDiscovery": {"authorizationServerMetadata": metadata},
                "clientId": "c2",
            }
        },
    )
    output = updated["oauth2ProviderConfigOutput"]["customOauth2ProviderConfig"]
    assert output["clientId"] == "c2" and output["oauthDiscovery"]["authorizationServerMetadata"] == metadata
    assert updated["lastUpdatedTime"] >= updated["createdTime"]


def test_built_in_vendors_map_to_their_endpoints(control: Any) -> None:
    google = control.create_oauth2_credential_provider(
        name="google",
        credentialProviderVendor="GoogleOauth2",
        oauth2ProviderConfigInput={"googleOauth2ProviderConfig": {"clientId": "g", "clientSecret": "gs"}},
    )
    metadata = google["oauth2ProviderConfigOutput"]["googleOauth2ProviderConfig"]["oauthDiscovery"][
        "authorizationServerMetadata"
    ]
    assert metadata["tokenEndpoint"] == "https://oauth2.googleapis.com/token"
    microsoft = control.create_oauth2_credential_provider(
        name="entra",
        credentialProviderVendor="MicrosoftOauth2",
        oauth2ProviderConfigInput={
            "microsoftOauth2ProviderConfig": {"clientId": "m", "clientSecret": "ms", "tenantId": "contoso"}
        },
    )
    output = microsoft["oauth2ProviderConfigOutput"]["microsoftOauth2ProviderConfig"]
    assert "/contoso/oauth2/v2.0/token" in output["oauthDiscovery"]["authorizationServerMetadata"]["tokenEndpoint"]
    okta = control.create_oauth2_credential_provider(
        name="okta",
        credentialProviderVendor="OktaOauth2",
        oauth2ProviderConfigInput={
            "includedOauth2ProviderConfig": {
                "clientId": "o",
                "clientSecret": "os",
                "issuer": "https://dev-1.okta.example",
                "authorizationEndpoint": "https://dev-1.okta.example/oauth2/v1/authorize",
                "tokenEndpoint": "https://dev-1.okta.example/oauth2/v1/token",
            }
        },
    )
    assert "includedOauth2ProviderConfig" in okta["oauth2ProviderConfigOutput"]
    listed = control.list_oauth2_credential_providers(maxResults=20)["credentialProviders"]
    vendors = {p["name"]: p["credentialProviderVendor"] for p in listed}
    assert {vendors.get("google"), vendors.get("entra"), vendors.get("okta")} == {
        "GoogleOauth2",
        "MicrosoftOauth2",
        "OktaOauth2",
    }
    for name in ("google", "entra", "okta"):
        control.delete_oauth2_credential_provider(name=name)
    with pytest.raises(ClientError) as gone:
        control.get_oauth2_credential_provider(name="okta")
    assert error_of(gone)[0] == "ResourceNotFoundException"


def test_oauth2_provider_errors(control: Any) -> None:
    cases: list[tuple[str, dict[str, Any], str]] = [
        ("OktaOauth2", {"includedOauth2ProviderConfig": {"clientId": "o"}}, "tokenEndpoint"),  # tenant IdP: no defaults
        ("GoogleOauth2", {"githubOauth2ProviderConfig": {"clientId": "g"}}, "googleOauth2ProviderConfig"),
        (
            "GithubOauth2",
            {"githubOauth2ProviderConfig": {"clientId": "g", "clientSecretSource": "EXTERNAL"}},
            "MANAGED",
        ),
        (
            "CustomOauth2",
            {"customOauth2ProviderConfig": {"oauthDiscovery": {"discoveryUrl": "https://idp.example/no-well-known"}}},
            "discoveryUrl",
        ),
        (
            "CustomOauth2",
            {
                "customOauth2ProviderConfig": {
                    "oauthDiscovery": {"discoveryUrl": "https://idp.example/.well-known/openid-configuration"},
                    "privateKeyJwtConfig": {"signingAlgorithm": "RS256"},
                }
            },
            "not supported",
        ),
    ]
    for vendor, config, expected in cases:
        with pytest.raises(ClientError) as bad:
            control.create_oauth2_credential_provider(
                name="bad-oauth", credentialProviderVendor=vendor, oauth2ProviderConfigInput=config
            )
        code, message, _ = error_of(bad)
        assert code == "ValidationException" and expected in message, (vendor, message)

    control.create_oauth2_credential_provider(
        name="dup-oauth",
        credentialProviderVendor="GithubOauth2",
        oauth2ProviderConfigInput={"githubOauth2ProviderConfig": {"clientId": "g", "clientSecret": "s"}},
    )
    with pytest.raises(ClientError) as duplicate:
        control.create_oauth2_credential_provider(
            name="dup-oauth",
            credentialProviderVendor="GithubOauth2",
            oauth2ProviderConfigInput={"githubOauth2ProviderConfig": {"clientId": "g", "clientSecret": "s"}},
        )
    assert error_of(duplicate)[0] == "ConflictException"


# -- token vault, authentication, secrets at rest --------------------------------------------------------------


def test_token_vault(control: Any) -> None:
    vault = control.get_token_vault()
    assert vault["tokenVaultId"] == "default" and vault["kmsConfiguration"] == {"keyType": "ServiceManagedKey"}
    with pytest.raises(ClientError) as other:
        control.get_token_vault(tokenVaultId="another")
    assert error_of(other)[0] == "ResourceNotFoundException"
    control.create_api_key_credential_provider(name="reset-key", apiKey="before-reset")
    reset = control.reset_token_vault_key_material(tokenVaultId="default")
    assert reset["lastModifiedDate"] >= vault["lastModifiedDate"]


def test_unsigned_requests_are_refused(hangar: HangarServer) -> None:
    response = httpx.post(f"{hangar.url}/identities/ListApiKeyCredentialProviders", json={})
    assert response.status_code in (401, 403)
    response = httpx.post(f"{hangar.url}/hangar/identity/rotate-vault-key")
    assert response.status_code in (401, 403)


def test_secrets_never_reach_the_log_nor_the_database_in_clear(control: Any, hangar: HangarServer) -> None:
    api_key = secret_value()
    client_secret = secret_value()
    control.create_api_key_credential_provider(name="clear-check", apiKey=api_key)
    control.update_api_key_credential_provider(name="clear-check", apiKey=api_key + "-2")
    control.create_oauth2_credential_provider(
        name="clear-check-oauth",
        credentialProviderVendor="SlackOauth2",
        oauth2ProviderConfigInput={"slackOauth2ProviderConfig": {"clientId": "c", "clientSecret": client_secret}},
    )
    with pytest.raises(ClientError):  # a failing request must not log its body either
        control.create_api_key_credential_provider(name="clear-check", apiKey=api_key + "-dup")
    files = [p for p in hangar.data_dir.iterdir() if p.name.startswith("hangar.db")]
    assert files, "the sqlite database was not where expected"
    for path in [*files, hangar.log_path]:
        assert path is not None
        content = path.read_bytes()
        for secret in (api_key, client_secret):
            assert secret.encode() not in content, f"{secret[:6]}... in clear in {path.name}"
