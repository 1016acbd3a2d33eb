"""hangar.sdk's stdlib SigV4 signer and credential resolution, used when an agent has no botocore.

The signer is held to botocore's own signer on the same request (byte-identical Authorization header), then to
a real ``hangar serve`` (which verifies with botocore): long-lived keys from the environment, and short-lived ones
served by a local container-credentials endpoint, as a Hangar session serves them.
"""

from __future__ import annotations

import datetime
import http.server
import json
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials as BotocoreCredentials

from hangar.sdk import _identity_sigv4 as sigv4
from tests.support.server import HangarServer, read_admin_key

FIXED_NOW = 1_796_000_000.0  # a fixed instant, so both signers sign the same timestamp
REGION = "us-west-2"


@pytest.fixture(scope="module")
def hangar(tmp_path_factory: pytest.TempPathFactory) -> Iterator[HangarServer]:
    """A real server; these tests start no sandbox, so the process backend spares the data dir's path checks."""
    server = HangarServer(data_dir=tmp_path_factory.mktemp("hangar") / "data", extra_args=["--sandbox", "process"])
    yield server.start()
    server.stop()


def botocore_authorization(
    method: str, url: str, headers: dict[str, str], body: bytes, credentials: sigv4.Credentials, service: str
) -> str:
    """botocore's Authorization header for the request our signer produced (same X-Amz-Date and token headers)."""
    request = AWSRequest(method=method, url=url, data=body, headers=headers)
    request.context["timestamp"] = headers["X-Amz-Date"]
    signer = SigV4Auth(
        BotocoreCredentials(credentials.access_key, credentials.secret_key, credentials.token), service, REGION
    )
    canonical = signer.canonical_request(request)
    signature = signer.signature(signer.string_to_sign(request, canonical), request)
    signed_headers = signer.signed_headers(signer.headers_to_sign(request))
    return f"AWS4-HMAC-SHA256 Credential={signer.scope(request)}, SignedHeaders={signed_headers}, Signature={signature}"


SIGNING_CASES = [
    pytest.param("POST", "/identities/api-key", [], b'{"a":1}', None, id="json-post"),
    pytest.param("POST", "/identities/oauth2/token", [], b"{}", "session-token/with+chars=", id="session-token"),
    pytest.param("GET", "/runtimes/", [("maxResults", "5"), ("nextToken", "a b/c+d=")], b"", None, id="query"),
    pytest.param(
        "POST",
        "/runtimes/arn%3Aaws%3Abedrock-agentcore%3Aus-west-2/invocations",
        [("qualifier", "DEFAULT")],
        b"x",
        None,
        id="encoded-path",
    ),
]


@pytest.mark.parametrize(("method", "path", "query", "body", "token"), SIGNING_CASES)
def test_signature_matches_botocore(
    method: str, path: str, query: list[tuple[str, str]], body: bytes, token: str | None
) -> None:
    from urllib.parse import quote

    credentials = sigv4.Credentials("AKIDEXAMPLE", "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY", token)
    headers = {"Host": "bedrock-agentcore.us-west-2.amazonaws.com", "Content-Type": "application/json"}
    signed = sigv4.sign_headers(method, path, query, headers, body, credentials, REGION, "bedrock-agentcore", FIXED_NOW)
    wire_query = "&".join(f"{quote(k, safe='-_.~')}={quote(v, safe='-_.~')}" for k, v in query)
    url = f"https://bedrock-agentcore.us-west-2.amazonaws.com{path}" + (f"?{wire_query}" if wire_query else "")
    unsigned = {name: value for name, value in signed.items() if name != "Authorization"}
    assert signed["X-Amz-Date"] == "20261130T005320Z"
    assert signed["Authorization"] == botocore_authorization(
        method, url, unsigned, body, credentials, "bedrock-agentcore"
    )
    assert ("X-Amz-Security-Token" in signed) == (token is not None)


def test_a_different_secret_gives_a_different_signature() -> None:
    headers = {"Host": "example.amazonaws.com"}
    one = sigv4.sign_headers("GET", "/", [], headers, b"", sigv4.Credentials("AK", "s1"), REGION, "svc", FIXED_NOW)
    two = sigv4.sign_headers("GET", "/", [], headers, b"", sigv4.Credentials("AK", "s2"), REGION, "svc", FIXED_NOW)
    assert one["Authorization"] != two["Authorization"]
    assert one["X-Amz-Date"] == two["X-Amz-Date"]


# -- against a real server ------------------------------------------------------------------------------------


def list_runtimes(server: HangarServer, credentials: sigv4.Credentials) -> httpx.Response:
    """ListAgentRuntimes (POST /runtimes/) signed by our signer, sent with httpx."""
    body = b'{"maxResults":3}'
    headers = {"Host": f"127.0.0.1:{server.port}", "Content-Type": "application/json"}
    signed = sigv4.sign_headers("POST", "/runtimes/", [], headers, body, credentials, REGION, "bedrock-agentcore")
    return httpx.post(f"{server.url}/runtimes/", content=body, headers=signed, timeout=30)


def test_real_server_accepts_our_signature_and_refuses_a_wrong_secret(hangar: HangarServer) -> None:
    key_id, secret = read_admin_key(hangar.credentials_file)
    answer = list_runtimes(hangar, sigv4.Credentials(key_id, secret))
    assert answer.status_code == 200, answer.text
    assert "agentRuntimes" in answer.json()
    refused = list_runtimes(hangar, sigv4.Credentials(key_id, secret[:-1] + ("x" if secret[-1] != "x" else "y")))
    assert refused.status_code == 403
    assert refused.headers["x-amzn-errortype"].startswith("InvalidSignatureException")


def test_environment_credentials_are_used_first(tmp_path: Path) -> None:
    env = {
        "AWS_ACCESS_KEY_ID": "AKENV",
        "AWS_SECRET_ACCESS_KEY": "env-secret",
        "AWS_SESSION_TOKEN": "env-token",
        "AWS_CONTAINER_CREDENTIALS_FULL_URI": "http://127.0.0.1:9/never-asked",
    }
    assert sigv4.resolve_credentials(env) == sigv4.Credentials("AKENV", "env-secret", "env-token")
    with pytest.raises(sigv4.CredentialsError, match="Unable to locate credentials"):
        sigv4.resolve_credentials({})


@dataclass
class CredentialsEndpoint:
    """A loopback container-credentials endpoint: answers ``document`` to callers presenting ``token``."""

    token: str
    document: dict[str, str]
    hits: list[str] = field(default_factory=list)
    server: http.server.ThreadingHTTPServer | None = None

    @property
    def url(self) -> str:
        assert self.server is not None
        return f"http://127.0.0.1:{self.server.server_address[1]}/v1/credentials"

    def start(self) -> CredentialsEndpoint:
        endpoint = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                endpoint.hits.append(self.headers.get("Authorization", ""))
                if self.headers.get("Authorization") != endpoint.token:
                    self.send_response(403)
                    self.end_headers()
                    return
                body = json.dumps(endpoint.document).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: object) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        return self

    def stop(self) -> None:
        if self.server is not None:
            self.server.shutdown()
            self.server.server_close()


def expiring_in(seconds: float, layout: str = "%Y-%m-%dT%H:%M:%SZ") -> str:
    moment = datetime.datetime.now(datetime.UTC) + datetime.timedelta(seconds=seconds)
    return moment.strftime(layout)


@pytest.fixture
def admin_endpoint(hangar: HangarServer) -> Iterator[CredentialsEndpoint]:
    key_id, secret = read_admin_key(hangar.credentials_file)
    document = {"AccessKeyId": key_id, "SecretAccessKey": secret, "Token": "container-token", "Expiration": ""}
    endpoint = CredentialsEndpoint(token="container-auth-token-1", document=document).start()
    yield endpoint
    endpoint.stop()


def test_container_credentials_sign_a_request_the_server_accepts(
    hangar: HangarServer, admin_endpoint: CredentialsEndpoint, tmp_path: Path
) -> None:
    admin_endpoint.document["Expiration"] = expiring_in(3600, "%Y-%m-%dT%H:%M:%S.%f000+00:00")  # nanoseconds
    env = {
        "AWS_CONTAINER_CREDENTIALS_FULL_URI": admin_endpoint.url,
        "AWS_CONTAINER_AUTHORIZATION_TOKEN": admin_endpoint.token,
    }
    credentials = sigv4.resolve_credentials(env)
    assert credentials.token == "container-token"
    answer = list_runtimes(hangar, credentials)
    assert answer.status_code == 200, answer.text
    # Cached until near expiry: a second resolution does not ask again.
    assert sigv4.resolve_credentials(env) == credentials
    assert admin_endpoint.hits == [admin_endpoint.token]

    # The token file wins over the variable (and is re-read on each fetch).
    token_file = tmp_path / "token"
    token_file.write_text(admin_endpoint.token + "\n")
    admin_endpoint.document["Expiration"] = expiring_in(60)  # inside the refresh margin: fetched on every use
    env_file = {
        **env,
        "AWS_CONTAINER_AUTHORIZATION_TOKEN": "wrong",
        "AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE": str(token_file),
    }
    env_file["AWS_CONTAINER_CREDENTIALS_FULL_URI"] = admin_endpoint.url + "?second"
    sigv4.resolve_credentials(env_file)
    sigv4.resolve_credentials(env_file)
    assert admin_endpoint.hits == [admin_endpoint.token] * 3


def test_container_credentials_errors_are_clear(admin_endpoint: CredentialsEndpoint) -> None:
    env = {"AWS_CONTAINER_CREDENTIALS_FULL_URI": admin_endpoint.url + "?bad", "AWS_CONTAINER_AUTHORIZATION_TOKEN": "no"}
    with pytest.raises(sigv4.CredentialsError, match="HTTP 403"):
        sigv4.resolve_credentials(env)
    env["AWS_CONTAINER_AUTHORIZATION_TOKEN"] = admin_endpoint.token
    for document in ({"unexpected": "shape"}, {"AccessKeyId": "A", "SecretAccessKey": "S", "Expiration": "tomorrow"}):
        admin_endpoint.document = document
        with pytest.raises(sigv4.CredentialsError, match="unusable document"):
            sigv4.resolve_credentials(env)
    env["AWS_CONTAINER_AUTHORIZATION_TOKEN"] = "line\nbreak"
    with pytest.raises(sigv4.CredentialsError, match="line break"):
        sigv4.resolve_credentials(env)
