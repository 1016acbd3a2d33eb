"""Hostile SigV4 requests against a real server: each is refused with the AWS error it deserves, none is a 500."""

from __future__ import annotations

import datetime as dt
import json

import httpx
import pytest

from tests.auth.signing import presigned_url, send, signed
from tests.support.server import HangarServer

CREDENTIALS = "/hangar/credentials/"
JSON = {"Content-Type": "application/json"}


def refused(response: httpx.Response, status: int, code: str) -> None:
    assert (response.status_code, response.headers.get("x-amzn-ErrorType")) == (status, code), response.text
    assert "message" in response.json()


def at(monkeypatch: pytest.MonkeyPatch, offset: dt.timedelta) -> None:
    """Make the *client's* signer believe it is another time (the server keeps its own clock)."""
    moment = dt.datetime.now(dt.UTC).replace(tzinfo=None) + offset
    monkeypatch.setattr("botocore.auth.get_current_datetime", lambda: moment)


def test_tampered_body(auth_server: HangarServer, admin_key) -> None:
    request = signed("POST", auth_server.url + CREDENTIALS, admin_key, b'{"name": "a"}', JSON)
    tampered = httpx.Request("POST", request.url, headers=request.headers, content=b'{"name": "b"}')
    refused(send(tampered), 403, "InvalidSignatureException")


def test_tampered_path(auth_server: HangarServer, admin_key) -> None:
    request = signed("DELETE", f"{auth_server.url}{CREDENTIALS}HGRAAAAAAAAAAAAAAAAA/", admin_key)
    tampered = httpx.Request("DELETE", f"{auth_server.url}{CREDENTIALS}{admin_key[0]}/", headers=request.headers)
    refused(send(tampered), 403, "InvalidSignatureException")


def test_tampered_query(auth_server: HangarServer, admin_key) -> None:
    request = signed("GET", auth_server.url + CREDENTIALS + "?maxResults=1", admin_key)
    tampered = httpx.Request("GET", auth_server.url + CREDENTIALS + "?maxResults=2", headers=request.headers)
    refused(send(tampered), 403, "InvalidSignatureException")


def test_tampered_signed_header(auth_server: HangarServer, admin_key) -> None:
    request = signed("POST", auth_server.url + CREDENTIALS, admin_key, b'{"name": "a"}', JSON)
    request.headers["Content-Type"] = "text/plain"
    refused(send(request), 403, "InvalidSignatureException")


def test_unsigned_header_may_change(auth_server: HangarServer, admin_key) -> None:
    request = signed("GET", auth_server.url + CREDENTIALS, admin_key)
    request.headers["User-Agent"] = "something else"
    assert send(request).status_code == 200


def test_missing_signed_header(auth_server: HangarServer, admin_key) -> None:
    request = signed("GET", auth_server.url + CREDENTIALS, admin_key, headers={"X-Hangar-Test": "1"})
    assert "x-hangar-test" in request.headers["Authorization"]
    del request.headers["X-Hangar-Test"]
    refused(send(request), 403, "InvalidSignatureException")


@pytest.mark.parametrize("minutes", [-6, 6, -60 * 24])
def test_stale_and_future_dates(auth_server: HangarServer, admin_key, monkeypatch, minutes: int) -> None:
    at(monkeypatch, dt.timedelta(minutes=minutes))
    response = send(signed("GET", auth_server.url + CREDENTIALS, admin_key))
    refused(response, 403, "InvalidSignatureException")
    assert ("expired" if minutes < 0 else "not yet current") in response.json()["message"]


def test_small_clock_skew_is_tolerated(auth_server: HangarServer, admin_key, monkeypatch) -> None:
    at(monkeypatch, dt.timedelta(minutes=-4))
    assert send(signed("GET", auth_server.url + CREDENTIALS, admin_key)).status_code == 200


def test_unknown_access_key(auth_server: HangarServer) -> None:
    response = send(signed("GET", auth_server.url + CREDENTIALS, ("HGRAUNKNOWNUNKNOWN23", "x" * 40)))
    refused(response, 403, "UnrecognizedClientException")


def test_deleted_key_stops_working(auth_server: HangarServer, admin_key) -> None:
    body = json.dumps({"name": "short-lived"}).encode()
    created = send(signed("POST", auth_server.url + CREDENTIALS, admin_key, body, JSON)).json()
    key = (created["accessKeyId"], created["secretAccessKey"])
    assert send(signed("GET", auth_server.url + CREDENTIALS, key)).status_code == 200
    deleted = send(signed("DELETE", f"{auth_server.url}{CREDENTIALS}{key[0]}/", admin_key))
    assert deleted.status_code == 200, deleted.text
    refused(send(signed("GET", auth_server.url + CREDENTIALS, key)), 403, "UnrecognizedClientException")


def test_wrong_region_and_service(auth_server: HangarServer, admin_key) -> None:
    refused(
        send(signed("GET", auth_server.url + CREDENTIALS, admin_key, region="eu-west-1")),
        403,
        "InvalidSignatureException",
    )
    refused(
        send(signed("GET", auth_server.url + CREDENTIALS, admin_key, service="sts")), 403, "InvalidSignatureException"
    )


def test_security_token_must_be_signed(auth_server: HangarServer, admin_key) -> None:
    request = signed("GET", auth_server.url + CREDENTIALS, admin_key, token="session-token")
    assert send(request).status_code == 200  # signed: accepted, it carries no extra rights
    request.headers["X-Amz-Security-Token"] = "another"
    refused(send(request), 403, "InvalidSignatureException")
    unsigned = signed("GET", auth_server.url + CREDENTIALS, admin_key)
    unsigned.headers["X-Amz-Security-Token"] = "injected"
    refused(send(unsigned), 403, "InvalidSignatureException")


def test_presigned_url_works_and_expires(auth_server: HangarServer, admin_key, monkeypatch) -> None:
    assert httpx.get(presigned_url(auth_server.url + CREDENTIALS, admin_key)).status_code == 200
    at(monkeypatch, dt.timedelta(minutes=-10))
    response = httpx.get(presigned_url(auth_server.url + CREDENTIALS, admin_key, expires=300))
    refused(response, 403, "InvalidSignatureException")
    assert "expired" in response.json()["message"]


def test_presigned_expiry_above_300_seconds_is_refused(auth_server: HangarServer, admin_key) -> None:
    response = httpx.get(presigned_url(auth_server.url + CREDENTIALS, admin_key, expires=301))
    refused(response, 400, "IncompleteSignatureException")


def test_presigned_url_with_tampered_query(auth_server: HangarServer, admin_key) -> None:
    url = presigned_url(auth_server.url + CREDENTIALS + "?qualifier=DEFAULT", admin_key)
    refused(httpx.get(url.replace("qualifier=DEFAULT", "qualifier=prod")), 403, "InvalidSignatureException")


GARBAGE_AUTHORIZATION = [
    "AWS4-HMAC-SHA256",
    "AWS4-HMAC-SHA256  Credential=x",
    "AWS4-HMAC-SHA256 Credential=",
    "AWS4-HMAC-SHA256 Credential=a/b/c/d/e, SignedHeaders=host, Signature=00",
    "AWS4-HMAC-SHA256 Credential=AK/20261126/us-west-2/bedrock-agentcore/aws4_request, SignedHeaders=host",
    "AWS4-HMAC-SHA256 Credential=AK/20261126/us-west-2/bedrock-agentcore/aws4_request, SignedHeaders=x-amz-date;host, "
    "Signature=" + "0" * 64,
    "AWS4-HMAC-SHA256 Credential=AK/20261126/us-west-2/bedrock-agentcore/aws4_request, SignedHeaders=host;x-amz-date, "
    "Signature=" + "é" * 64,
    "AWS4-HMAC-SHA256 Credential=ÿ/20261126/us-west-2/bedrock-agentcore/aws4_request, SignedHeaders=;;, Signature=zz",
    "Basic dXNlcjpwYXNz",
    "Bearer abc.def.ghi",
    "AWS4-HMAC-SHA256 Credential=AK/20261126/us-west-2/bedrock-agentcore/aws4_request, "
    "Credential=AK/20261126/us-west-2/bedrock-agentcore/aws4_request, SignedHeaders=host, Signature=" + "0" * 64,
]


@pytest.mark.parametrize("value", GARBAGE_AUTHORIZATION)
def test_garbage_authorization_is_a_clean_4xx(auth_server: HangarServer, value: str) -> None:
    headers = {"Authorization": value.encode("utf-8"), "X-Amz-Date": b"20261126T000000Z"}
    response = httpx.get(auth_server.url + CREDENTIALS, headers=headers)
    assert response.status_code in (400, 403), response.text
    assert response.headers["x-amzn-ErrorType"] in ("IncompleteSignatureException", "InvalidSignatureException")


@pytest.mark.parametrize(
    "query",
    [
        "X-Amz-Algorithm=AWS4-HMAC-SHA256",
        "X-Amz-Algorithm=HMAC&X-Amz-Credential=a&X-Amz-Date=b&X-Amz-Expires=1&X-Amz-SignedHeaders=host&X-Amz-Signature=c",
        "X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Credential=a%2Fb%2Fc%2Fd%2Faws4_request&X-Amz-Date=nope"
        "&X-Amz-Expires=-5&X-Amz-SignedHeaders=host&X-Amz-Signature=" + "0" * 64,
        "X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Algorithm=AWS4-HMAC-SHA256",
        "X-Amz-Algorithm=%FF%FE&X-Amz-Credential=%00",
    ],
)
def test_garbage_presigned_query_is_a_clean_4xx(auth_server: HangarServer, query: str) -> None:
    response = httpx.get(f"{auth_server.url}{CREDENTIALS}?{query}")
    assert response.status_code in (400, 403), response.text


def test_declared_payload_hash_must_match_and_unsigned_payload_is_s3_only(auth_server: HangarServer, admin_key) -> None:
    import hashlib

    url = auth_server.url + CREDENTIALS
    unsigned = signed("POST", url, admin_key, b'{"name": "u"}', {**JSON, "X-Amz-Content-SHA256": "UNSIGNED-PAYLOAD"})
    refused(send(unsigned), 403, "InvalidSignatureException")
    other = hashlib.sha256(b"something else").hexdigest()
    lying = signed("POST", url, admin_key, b'{"name": "u"}', {**JSON, "X-Amz-Content-SHA256": other})
    refused(send(lying), 403, "InvalidSignatureException")
    honest_hash = hashlib.sha256(b'{"name": "u"}').hexdigest()
    honest = signed("POST", url, admin_key, b'{"name": "u"}', {**JSON, "X-Amz-Content-SHA256": honest_hash})
    assert send(honest).status_code == 201


def test_both_signature_forms_at_once(auth_server: HangarServer, admin_key) -> None:
    url = presigned_url(auth_server.url + CREDENTIALS, admin_key)
    request = signed("GET", auth_server.url + CREDENTIALS, admin_key)
    response = httpx.get(url, headers={"Authorization": request.headers["Authorization"]})
    refused(response, 400, "IncompleteSignatureException")


def test_refusals_are_logged_without_secrets_and_none_was_a_server_error(auth_server: HangarServer, admin_key) -> None:
    """Runs after the hostile requests above (file order): the log names refusals, never a secret or a 500."""
    send(signed("GET", auth_server.url + CREDENTIALS, (admin_key[0], "Z" * 40)))
    log = auth_server.log()
    assert "refused GET /hangar/credentials/: InvalidSignatureException" in log
    assert "unhandled error" not in log and "Traceback" not in log
    assert admin_key[1] not in log and "Z" * 40 not in log


@pytest.mark.parametrize("path", ["/hangar/credentials/../", "/hangar/credentials/%2E%2E/"])
def test_dot_segments_cannot_reuse_a_signature_for_another_path(auth_server: HangarServer, admin_key, path) -> None:
    """botocore signs paths with dot segments normalised; such a path would be signed as one and routed as another.

    Sent over a raw socket: HTTP clients normalise dot segments themselves.
    """
    import socket

    request = signed("DELETE", auth_server.url + path, admin_key)
    lines = [f"DELETE {path} HTTP/1.1", *(f"{k}: {v}" for k, v in request.headers.items()), "Connection: close"]
    with socket.create_connection(("127.0.0.1", auth_server.port), timeout=10) as sock:
        sock.sendall(("\r\n".join(lines) + "\r\n\r\n").encode())
        answer = b""
        while chunk := sock.recv(65536):
            answer += chunk
    status_line, _, rest = answer.decode(errors="replace").partition("\r\n")
    assert int(status_line.split()[1]) == 403, answer  # routed as DeleteCredential("..") otherwise
    assert "InvalidSignatureException" in rest
