"""The verifier's own canonical request and cached signing key give exactly what botocore's signer gives.

``hangar.auth.sigv4`` builds the canonical request itself for every service but S3 (the warm invoke path pays
for it on every request). A verifier that canonicalises differently from the client would either refuse good
requests or, worse, accept a request the client never signed; so each case here is signed by botocore's own
``SigV4Auth`` (what boto3 and the aws CLI run) and must verify, and the same request altered must not.
"""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime

import anyio
import pytest
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.compat import HTTPHeaders
from botocore.credentials import Credentials
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from hangar.auth.credentials import SigningKey
from hangar.auth.errors import InvalidSignatureError
from hangar.auth.sigv4 import SignedRequest, SigV4Verifier, canonical_request

REGION = "us-west-2"
KEY = SigningKey("AKIDEQUIVALENCE0001", "123456789012", "tester", "s3cr3t/with+odd=chars")
ARN = "arn:aws:bedrock-agentcore:us-west-2:123456789012:runtime/agent-abcdefghij"
ENCODED_ARN = ARN.replace(":", "%3A").replace("/", "%2F")


class _Keys:
    """The one key the verifier knows."""

    async def signing_key(self, access_key_id: str) -> SigningKey | None:
        return KEY if access_key_id == KEY.access_key_id else None

    async def record_use(self, access_key_id: str) -> None:
        return None


class _Reference(SigV4Auth):  # type: ignore[misc]
    """botocore's signer with the received headers and payload hash, as the verifier used to run it."""

    def __init__(self, received: HTTPHeaders, payload_hash: str, service: str) -> None:
        super().__init__(Credentials(KEY.access_key_id, KEY.secret), service, REGION)
        self.received = received
        self.payload_hash = payload_hash

    def headers_to_sign(self, request: AWSRequest) -> HTTPHeaders:
        return self.received

    def payload(self, request: AWSRequest) -> str:
        return self.payload_hash


def _sign(
    method: str, raw_path: str, query: list[tuple[str, str]], headers: list[tuple[str, str]], body: bytes, service: str
) -> tuple[SignedRequest, str, str]:
    """Sign with botocore; return the request as the gateway would receive it, the body hash and the canonical."""
    amz_date = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    headers = [*headers, ("x-amz-date", amz_date)]
    names = sorted({name.lower() for name, _ in headers})
    received = HTTPHeaders()
    for name in names:
        for key, value in headers:
            if key.lower() == name:
                received[name] = value
    payload = hashlib.sha256(body).hexdigest()
    signer = _Reference(received, payload, service)
    request = AWSRequest(method=method, url=f"http://hangar.invalid{raw_path}", params=list(query))
    request.context["timestamp"] = amz_date
    canonical = signer.canonical_request(request)
    signature = signer.signature(signer.string_to_sign(request, canonical), request)
    credential = f"{KEY.access_key_id}/{amz_date[:8]}/{REGION}/{service}/aws4_request"
    authorization = f"AWS4-HMAC-SHA256 Credential={credential}, SignedHeaders={';'.join(names)}, Signature={signature}"
    query_string = "&".join(f"{_wire(k)}={_wire(v)}" for k, v in query)
    received_request = SignedRequest(method, raw_path, query_string, [*headers, ("Authorization", authorization)])
    return received_request, payload, canonical


def _wire(text: str) -> str:
    return "".join(c if c.isalnum() or c in "-_.~" else "".join(f"%{b:02X}" for b in c.encode()) for c in text)


def _verify(request: SignedRequest, payload: str) -> None:
    anyio.run(SigV4Verifier(_Keys(), REGION).verify, request, payload)


CASES = [
    ("POST", f"/runtimes/{ENCODED_ARN}/invocations", [("qualifier", "DEFAULT")], [("host", "127.0.0.1:8080")]),
    ("post", "/runtimes/x/invocations/", [], [("Host", "h"), ("Content-Type", "  application/json ;  a=b  ")]),
    ("GET", "/a//b/c%7E~/%C3%A9+x/", [("b", "2"), ("a", "z"), ("a", "y"), ("e", "")], [("host", "h:1")]),
    ("GET", "/", [("k", "a b*c/d~e%f"), ("ü", "ø")], [("host", "h"), ("x-custom", "1"), ("X-Custom", "\t2  3")]),
    ("POST", "/logs", [], [("host", "h"), ("x-amz-target", "Logs_20140328.GetLogEvents"), ("x-amzn-a", "é ü")]),
]


@pytest.mark.parametrize(("method", "path", "query", "headers"), CASES)
@pytest.mark.parametrize("service", ["bedrock-agentcore", "logs", "ecr"])
def test_botocore_signed_requests_verify(
    method: str, path: str, query: list[tuple[str, str]], headers: list[tuple[str, str]], service: str
) -> None:
    request, payload, canonical = _sign(method, path, query, headers, b'{"prompt": "hi"}', service)
    _verify(request, payload)
    signed = {name: request.header_values(name) for name in sorted({n.lower() for n, _ in request.headers})}
    signed.pop("authorization")
    assert canonical_request(method, path, query, signed, payload) == canonical


@pytest.mark.parametrize(
    "alter",
    [
        lambda r: SignedRequest(r.method, r.raw_path + "x", r.query_string, r.headers),
        lambda r: SignedRequest(r.method, r.raw_path.replace("%3A", ":"), r.query_string, r.headers),
        lambda r: SignedRequest(r.method, r.raw_path, r.query_string + "&extra=1", r.headers),
        lambda r: SignedRequest("PUT", r.raw_path, r.query_string, r.headers),
        lambda r: SignedRequest(r.method, r.raw_path, r.query_string, [*r.headers, ("host", "second")]),
    ],
)
def test_altered_requests_are_refused(alter: object) -> None:
    request, payload, _ = _sign("POST", *CASES[0][1:], b"{}", "bedrock-agentcore")  # type: ignore[misc]
    _verify(request, payload)
    with pytest.raises(InvalidSignatureError):
        _verify(alter(request), payload)  # type: ignore[operator]


_TEXT = st.text(st.characters(codec="utf-8", exclude_categories=("Cs", "Cc")), max_size=12)
_SEGMENT = st.text(st.sampled_from("abz09-_.~%2F3A+ é"), min_size=1, max_size=8).filter(
    lambda s: s not in (".", "..") and "%" not in s
)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    segments=st.lists(_SEGMENT, min_size=1, max_size=4),
    query=st.lists(st.tuples(_TEXT.filter(bool), _TEXT), max_size=4),
    values=st.lists(_TEXT.map(lambda s: f" {s}\t"), min_size=1, max_size=3),
)
def test_canonical_request_matches_botocore(
    segments: list[str], query: list[tuple[str, str]], values: list[str]
) -> None:
    path = "/" + "/".join(_wire(s) for s in segments)
    headers = [("host", "h")] + [("x-repeated", value) for value in values]
    request, payload, canonical = _sign("POST", path, query, headers, b"", "bedrock-agentcore")
    signed = {"host": ["h"], "x-repeated": values, "x-amz-date": request.header_values("x-amz-date")}
    assert canonical_request("POST", path, query, signed, payload) == canonical
    _verify(request, payload)
