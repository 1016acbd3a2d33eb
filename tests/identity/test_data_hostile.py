"""Hostile input to the identity data plane: forged, tampered, expired and foreign workload access tokens; a session
acting beyond its own workload identity; IdPs that are down or answer garbage. Each must give a clear AWS error,
never a token and never a hang."""

from __future__ import annotations

import asyncio
import json
import threading
import time
import uuid
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs

import jwt
import pytest
from botocore.exceptions import ClientError

from hangar.domain.errors import AccessDeniedError, HangarError
from hangar.domain.types import Principal
from tests.identity.data_support import in_process, session
from tests.support.idp_common import new_rsa_key
from tests.support.server import HangarServer, free_port

KEY_VALUE = "hostile-test-key-0001"


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[HangarServer]:
    running = HangarServer(data_dir=tmp_path_factory.mktemp("hostile") / "data").start()
    control = running.boto3_client("bedrock-agentcore-control")
    for name in ("wl-alpha", "wl-beta", "wl-doomed"):
        control.create_workload_identity(name=name)
    control.create_api_key_credential_provider(name="the-key", apiKey=KEY_VALUE)
    yield running
    running.stop()


@pytest.fixture(scope="module")
def data(server: HangarServer):  # type: ignore[no-untyped-def]
    return server.boto3_client("bedrock-agentcore")


def api_key_error(data, token: str) -> tuple[str, str]:  # type: ignore[no-untyped-def]
    with pytest.raises(ClientError) as refused:
        data.get_resource_api_key(workloadIdentityToken=token, resourceCredentialProviderName="the-key")
    return refused.value.response["Error"]["Code"], refused.value.response["Error"]["Message"]


def claims(workload: str = "wl-alpha", **changes: object) -> dict[str, object]:
    now = int(time.time())
    base: dict[str, object] = {
        "iss": "hangar:identity",
        "aud": "hangar:workload-access-token",
        "wl": workload,
        "sub": "mallory",
        "iat": now,
        "exp": now + 600,
        "jti": uuid.uuid4().hex,
    }
    base.update(changes)
    return base


def server_key(server: HangarServer) -> bytes:
    return (server.data_dir / "identity" / "wat.key").read_bytes()


def test_a_genuine_token_works(server: HangarServer, data) -> None:  # type: ignore[no-untyped-def]
    wat = data.get_workload_access_token(workloadName="wl-alpha")["workloadAccessToken"]
    assert data.get_resource_api_key(workloadIdentityToken=wat, resourceCredentialProviderName="the-key")["apiKey"]
    own = jwt.encode(claims(), server_key(server), algorithm="HS256")  # the positive control for the cases below
    assert data.get_resource_api_key(workloadIdentityToken=own, resourceCredentialProviderName="the-key")["apiKey"]


def test_forged_token_is_refused(data) -> None:  # type: ignore[no-untyped-def]
    forged = jwt.encode(claims(), b"k" * 32, algorithm="HS256")  # another installation's (or a guessed) key
    assert api_key_error(data, forged)[0] == "UnauthorizedException"


def test_other_algorithms_are_refused(server: HangarServer, data) -> None:  # type: ignore[no-untyped-def]
    unsigned = jwt.encode(claims(), None, algorithm="none")
    rsa_signed = jwt.encode(claims(), new_rsa_key(), algorithm="RS256")
    hs512 = jwt.encode(claims(), server_key(server), algorithm="HS512")
    for token in (unsigned, rsa_signed, hs512, "not-a-token", "a.b.c"):
        assert api_key_error(data, token)[0] == "UnauthorizedException"


def test_expired_token_is_refused(server: HangarServer, data) -> None:  # type: ignore[no-untyped-def]
    now = int(time.time())
    expired = jwt.encode(claims(iat=now - 7200, exp=now - 3600), server_key(server), algorithm="HS256")
    code, message = api_key_error(data, expired)
    assert code == "UnauthorizedException" and "expired" in message


def test_tampered_token_is_refused(data) -> None:  # type: ignore[no-untyped-def]
    genuine = data.get_workload_access_token_for_user_id(workloadName="wl-alpha", userId="alice")
    header, payload, signature = genuine["workloadAccessToken"].split(".")
    document = json.loads(jwt.utils.base64url_decode(payload))
    document.update(wl="wl-beta", sub="bob")
    tampered = ".".join([header, jwt.utils.base64url_encode(json.dumps(document).encode()).decode(), signature])
    assert api_key_error(data, tampered)[0] == "UnauthorizedException"


def test_token_of_a_deleted_workload_is_refused(server: HangarServer, data) -> None:  # type: ignore[no-untyped-def]
    wat = data.get_workload_access_token(workloadName="wl-doomed")["workloadAccessToken"]
    server.boto3_client("bedrock-agentcore-control").delete_workload_identity(name="wl-doomed")
    assert api_key_error(data, wat)[0] == "ResourceNotFoundException"
    with pytest.raises(ClientError) as missing:
        data.get_workload_access_token(workloadName="wl-doomed")
    assert missing.value.response["Error"]["Code"] == "ResourceNotFoundException"


# -- a session (the sandbox identity channel's principal) stays inside its own workload identity -------------------


def test_session_acts_only_for_its_own_workload(server: HangarServer, data) -> None:  # type: ignore[no-untyped-def]
    server.boto3_client("bedrock-agentcore-control").create_oauth2_credential_provider(
        name="closed-idp",
        credentialProviderVendor="CustomOauth2",
        oauth2ProviderConfigInput={
            "customOauth2ProviderConfig": {
                "oauthDiscovery": {
                    "authorizationServerMetadata": {
                        "issuer": "http://127.0.0.1:9",
                        "authorizationEndpoint": "http://127.0.0.1:9/auth",
                        "tokenEndpoint": "http://127.0.0.1:9/token",
                        "responseTypes": ["code"],
                    }
                },
                "clientId": "c",
                "clientSecret": "s",
            }
        },
    )
    alpha_wat = data.get_workload_access_token_for_user_id(workloadName="wl-alpha", userId="alice")
    alpha_wat = alpha_wat["workloadAccessToken"]
    beta_wat = data.get_workload_access_token(workloadName="wl-beta")["workloadAccessToken"]
    plane = in_process(server).identity_data
    assert plane is not None
    beta = session("wl-beta")

    async def attempts() -> dict[str, HangarError | dict]:
        results: dict[str, HangarError | dict] = {}
        calls = {
            "own api key": plane.get_resource_api_key(
                beta, {"workloadIdentityToken": beta_wat, "resourceCredentialProviderName": "the-key"}
            ),
            "other's WAT": plane.get_resource_api_key(
                beta, {"workloadIdentityToken": alpha_wat, "resourceCredentialProviderName": "the-key"}
            ),
            "mint": plane.get_workload_access_token(beta, {"workloadName": "wl-beta"}),
            "mint for a user": plane.get_workload_access_token_for_user_id(
                beta, {"workloadName": "wl-beta", "userId": "alice"}
            ),
            "JWT for another workload": plane.get_workload_access_token_for_jwt(
                beta, {"workloadName": "wl-alpha", "userToken": "a.b.c"}
            ),
            "JWT without an authorizer": plane.get_workload_access_token_for_jwt(
                beta, {"workloadName": "wl-beta", "userToken": jwt.encode(claims(), new_rsa_key(), algorithm="RS256")}
            ),
        }
        for name, call in calls.items():
            try:
                results[name] = await call
            except HangarError as exc:
                results[name] = exc
        # alpha's user starts a USER_FEDERATION session (as an admin would); beta may not complete it.
        started = await plane.get_resource_oauth2_token(
            Principal(kind="sigv4", account_id="123456789012", name="admin"),
            {
                "workloadIdentityToken": alpha_wat,
                "resourceCredentialProviderName": "closed-idp",
                "scopes": ["read"],
                "oauth2Flow": "USER_FEDERATION",
            },
        )
        try:
            results["complete another workload's session"] = await plane.complete_resource_token_auth(
                beta, {"sessionUri": started["sessionUri"], "userIdentifier": {"userId": "alice"}}
            )
        except HangarError as exc:
            results["complete another workload's session"] = exc
        await plane.stop()
        return results

    results = asyncio.run(attempts())
    assert results.pop("own api key") == {"apiKey": KEY_VALUE}
    for name, result in results.items():
        assert isinstance(result, AccessDeniedError), f"{name}: {result!r}"


# -- IdPs that are down or answer garbage ----------------------------------------------------------------------

ANSWERS: dict[str, tuple[int, str, bytes]] = {
    "/html": (200, "text/html", b"<html><body>Sign in</body></html>"),
    "/no-token": (200, "application/json", b'{"token_type": "Bearer"}'),
    "/list": (200, "application/json", b'["access_token"]'),
    "/server-error": (500, "text/plain", b"Internal error \x00\xff"),
    "/bad-expiry": (200, "application/json", b'{"access_token": "x", "expires_in": "soon"}'),
    "/huge": (200, "application/json", b'{"access_token": "' + b"a" * (1024 * 1024) + b'"}'),
}


@pytest.fixture(scope="module")
def junk_idp() -> Iterator[str]:
    class Junk(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            form = parse_qs(self.rfile.read(int(self.headers.get("content-length", "0"))).decode())
            if self.path == "/echo-auth":  # a token that says how the client authenticated
                basic = self.headers.get("authorization", "").startswith("Basic ")
                seen = "basic" if basic else "post" if "client_secret" in form else "none"
                ANSWERS[self.path] = (200, "application/json", json.dumps({"access_token": seen}).encode())
            status, kind, body = ANSWERS[self.path]
            self.send_response(status)
            self.send_header("Content-Type", kind)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *_args: object) -> None:
            pass

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Junk)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()


def provider_at(server: HangarServer, name: str, token_endpoint: str, **extra: object) -> None:
    server.boto3_client("bedrock-agentcore-control").create_oauth2_credential_provider(
        name=name,
        credentialProviderVendor="CustomOauth2",
        oauth2ProviderConfigInput={
            "customOauth2ProviderConfig": {
                **extra,
                "oauthDiscovery": {
                    "authorizationServerMetadata": {
                        "issuer": token_endpoint,
                        "authorizationEndpoint": token_endpoint,
                        "tokenEndpoint": token_endpoint,
                        "responseTypes": ["code"],
                    }
                },
                "clientId": "client",
                "clientSecret": "client-secret-never-echoed",
            }
        },
    )


def m2m_error(server: HangarServer, data, provider: str) -> str:  # type: ignore[no-untyped-def]
    wat = data.get_workload_access_token(workloadName="wl-alpha")["workloadAccessToken"]
    with pytest.raises(ClientError) as refused:
        data.get_resource_oauth2_token(
            workloadIdentityToken=wat, resourceCredentialProviderName=provider, scopes=["x"], oauth2Flow="M2M"
        )
    assert refused.value.response["Error"]["Code"] == "ValidationException"
    message = refused.value.response["Error"]["Message"]
    assert provider in message and "client-secret-never-echoed" not in message
    assert message.split(": ", 1)[1] in server.log() and "client-secret-never-echoed" not in server.log()
    return message


def test_idp_down_is_a_clear_error(server: HangarServer, data) -> None:  # type: ignore[no-untyped-def]
    provider_at(server, "down-idp", f"http://127.0.0.1:{free_port()}/token")
    assert "unreachable" in m2m_error(server, data, "down-idp")


@pytest.mark.parametrize(
    ("path", "reason"),
    [
        ("/html", "not a JSON object"),
        ("/no-token", "without a usable access_token"),
        ("/list", "not a JSON object"),
        ("/server-error", "HTTP 500"),
        ("/bad-expiry", "expires_in"),
        ("/huge", "more than"),
    ],
)
def test_idp_garbage_is_a_clear_error(server: HangarServer, data, junk_idp: str, path: str, reason: str) -> None:  # type: ignore[no-untyped-def]
    name = "junk" + path.replace("/", "-")
    provider_at(server, name, junk_idp + path)
    assert reason in m2m_error(server, data, name)


def test_unknown_session_is_not_found(data) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(ClientError) as unknown:
        data.complete_resource_token_auth(
            sessionUri="urn:ietf:params:oauth:request_uri:nosuchsession", userIdentifier={"userId": "alice"}
        )
    assert unknown.value.response["Error"]["Code"] == "ResourceNotFoundException"


@pytest.mark.parametrize(("method", "seen"), [("CLIENT_SECRET_POST", "post"), ("CLIENT_SECRET_BASIC", "basic")])
def test_client_authentication_method_is_honoured(
    server: HangarServer, data, junk_idp: str, method: str, seen: str
) -> None:  # type: ignore[no-untyped-def]
    name = f"auth-{seen}"
    provider_at(server, name, junk_idp + "/echo-auth", clientAuthenticationMethod=method)
    wat = data.get_workload_access_token(workloadName="wl-alpha")["workloadAccessToken"]
    answer = data.get_resource_oauth2_token(
        workloadIdentityToken=wat, resourceCredentialProviderName=name, scopes=["x"], oauth2Flow="M2M"
    )
    assert answer["accessToken"] == seen
