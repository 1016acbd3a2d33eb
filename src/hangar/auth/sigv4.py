"""SigV4 verification: recompute the signature of a received request with botocore's own signer.

The client signed an ``AWSRequest`` with ``botocore.auth.SigV4Auth`` (or ``S3SigV4Auth`` for the artifact
bucket, ``SigV4QueryAuth`` for presigned URLs). We rebuild that request from what arrived - the raw path, the
query, exactly the headers named in ``SignedHeaders`` and the body's sha256 - and let the same classes produce
the canonical request, string to sign and signature. So the canonical URI is the wire path encoded once more
(``%3A`` -> ``%253A``) as botocore does for every service but S3, and S3 paths are used as sent.

The warm invoke path pays for this on every request, so for every service but S3 the canonical request is built
here, step for step as ``SigV4Auth.canonical_request`` builds it (``tests/auth/test_sigv4_equivalence.py`` checks
the two agree on ordinary and hostile requests), and the derived signing key is kept per (secret, date, region,
service): four HMACs fewer per request. S3 keeps botocore's signer (its own path and payload rules).
"""

from __future__ import annotations

import functools
import hashlib
import hmac
import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Protocol
from urllib.parse import quote, unquote, urlsplit

from botocore.auth import UNSIGNED_PAYLOAD, S3SigV4Auth, SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.compat import HTTPHeaders
from botocore.credentials import ReadOnlyCredentials
from botocore.utils import normalize_url_path

from hangar.auth.credentials import SigningKey
from hangar.auth.errors import (
    IncompleteSignatureError,
    InvalidSignatureError,
    MissingAuthenticationTokenError,
    UnrecognizedClientError,
)

ALGORITHM = "AWS4-HMAC-SHA256"
SERVICES = ("bedrock-agentcore", "s3", "ecr", "logs")
MAX_SKEW_S = 300  # AWS allows the signing time to be 5 minutes off the server's clock, either way
# Longest X-Amz-Expires per service: AgentCore's limit for presigned WebSocket URLs, S3's one week.
MAX_PRESIGNED_EXPIRES_S = {"bedrock-agentcore": 300, "s3": 7 * 24 * 3600}
_HEX64 = re.compile(r"^[0-9a-f]{64}$")
_AMZ_DATE = "%Y%m%dT%H%M%SZ"
_BAD_SIGNATURE = (
    "The request signature we calculated does not match the signature you provided. "
    "Check your AWS Secret Access Key and signing method. Consult the service documentation for details."
)


@dataclass(frozen=True)
class SignedRequest:
    """A received request as the verifier needs it: nothing decoded, nothing dropped."""

    method: str
    raw_path: str  # as on the wire, still percent-encoded
    query_string: str  # raw, without the leading "?"
    headers: list[tuple[str, str]]  # in arrival order; names any case; repeated names kept

    def header_values(self, name: str) -> list[str]:
        """Every value of the (lower-case) header ``name``, in arrival order."""
        return list(self._by_name.get(name, ()))

    @functools.cached_property
    def _by_name(self) -> dict[str, list[str]]:
        """Values by lower-case name, built once: the verifier asks for a dozen names per request."""
        index: dict[str, list[str]] = {}
        for key, value in self.headers:
            index.setdefault(key.lower(), []).append(value)
        return index


@dataclass(frozen=True)
class VerifiedCaller:
    key: SigningKey
    service: str
    presigned: bool


@dataclass
class _Claim:
    """What the request says about its own signature."""

    access_key_id: str
    date: str
    region: str
    service: str
    signed_headers: list[str]
    signature: str
    amz_date: str
    security_token: str | None
    presigned: bool
    expires: int | None = None
    query: list[tuple[str, str]] = field(default_factory=list)


class KeySource(Protocol):
    """Where the verifier finds signing keys: ``CredentialStore`` (the credentials table), or the identity
    channel's table of the sandboxes' own keys."""

    async def signing_key(self, access_key_id: str) -> SigningKey | None: ...

    async def record_use(self, access_key_id: str) -> None: ...


class SigV4Verifier:
    """Verify header-form and presigned-query SigV4 requests against Hangar's access keys."""

    def __init__(self, credentials: KeySource, region: str, clock: Callable[[], float] = time.time) -> None:
        self._credentials = credentials
        self._region = region
        self._clock = clock

    def carries_signature(self, request: SignedRequest) -> bool:
        """True when the request attempts SigV4 at all (header or query form)."""
        auth = request.header_values("authorization")
        if auth and auth[0].startswith(ALGORITHM):
            return True
        return any(key == "X-Amz-Algorithm" for key, _ in _query_pairs(request.query_string))

    async def verify(self, request: SignedRequest, payload_sha256: str) -> VerifiedCaller:
        """Return the verified caller or raise an AWS-shaped 400/403; never trusts a field it has not checked."""
        claim = self._parse(request)
        self._check_scope_and_time(claim)
        key = await self._credentials.signing_key(claim.access_key_id)
        if key is None:
            raise UnrecognizedClientError("The security token included in the request is invalid.")
        hosts: list[str | None] = [None]
        bare_host = _without_port(_one(request, "host"))
        if claim.presigned and bare_host is not None:
            # bedrock-agentcore's SDK presigns with the host name only, port dropped; accept that form too.
            hosts.append(bare_host)
        for host in hosts:
            expected = _expected_signature(request, claim, key, payload_sha256, host)
            if hmac.compare_digest(expected.encode(), claim.signature.encode()):
                await self._credentials.record_use(key.access_key_id)
                return VerifiedCaller(key=key, service=claim.service, presigned=claim.presigned)
        raise InvalidSignatureError(_BAD_SIGNATURE)

    # -- parsing -------------------------------------------------------------------------------------------

    def _parse(self, request: SignedRequest) -> _Claim:
        auth = request.header_values("authorization")
        query = _query_pairs(request.query_string)
        query_names = {key for key, _ in query}
        if auth and "X-Amz-Algorithm" in query_names:
            raise IncompleteSignatureError("Use either the Authorization header or a presigned URL, not both.")
        if auth:
            return self._parse_header(request, auth)
        if "X-Amz-Algorithm" in query_names:
            return self._parse_query(request, query)
        raise MissingAuthenticationTokenError("Missing Authentication Token")

    def _parse_header(self, request: SignedRequest, auth: list[str]) -> _Claim:
        if len(auth) != 1:
            raise IncompleteSignatureError("Exactly one Authorization header is allowed.")
        algorithm, _, rest = auth[0].strip().partition(" ")
        if algorithm != ALGORITHM:
            raise IncompleteSignatureError(f"Unsupported Authorization type; expected {ALGORITHM}.")
        fields: dict[str, str] = {}
        for part in rest.split(","):
            name, sep, value = part.strip().partition("=")
            if not sep or name in fields:
                raise IncompleteSignatureError(f"Malformed Authorization header field {name[:32]!r}.")
            fields[name] = value
        for required in ("Credential", "SignedHeaders", "Signature"):
            if required not in fields:
                raise IncompleteSignatureError(f"Authorization header requires '{required}' parameter.")
        amz_dates = request.header_values("x-amz-date")
        if len(amz_dates) != 1:
            raise IncompleteSignatureError("Authorization header requires existence of exactly one X-Amz-Date header.")
        tokens = request.header_values("x-amz-security-token")
        claim = _claim(fields["Credential"], fields["SignedHeaders"], fields["Signature"], amz_dates[0].strip())
        claim.security_token = tokens[0] if tokens else None
        if len(tokens) > 1:
            raise IncompleteSignatureError("Only one X-Amz-Security-Token header is allowed.")
        if tokens and "x-amz-security-token" not in claim.signed_headers:
            raise InvalidSignatureError("X-Amz-Security-Token must be a signed header.")
        if "x-amz-date" not in claim.signed_headers:
            raise InvalidSignatureError("X-Amz-Date must be a signed header.")
        self._check_signed_headers_present(request, claim)
        return claim

    def _parse_query(self, request: SignedRequest, query: list[tuple[str, str]]) -> _Claim:
        params: dict[str, str] = {}
        for key, value in query:
            if key.startswith("X-Amz-") and key in params:
                raise IncompleteSignatureError(f"Query parameter {key} appears more than once.")
            params[key] = value
        for required in ("X-Amz-Credential", "X-Amz-Date", "X-Amz-Expires", "X-Amz-SignedHeaders", "X-Amz-Signature"):
            if required not in params:
                raise IncompleteSignatureError(f"A presigned URL requires the '{required}' query parameter.")
        if params["X-Amz-Algorithm"] != ALGORITHM:
            raise IncompleteSignatureError(f"Unsupported X-Amz-Algorithm; expected {ALGORITHM}.")
        claim = _claim(
            params["X-Amz-Credential"], params["X-Amz-SignedHeaders"], params["X-Amz-Signature"], params["X-Amz-Date"]
        )
        claim.presigned = True
        claim.security_token = params.get("X-Amz-Security-Token")
        expires = params["X-Amz-Expires"]
        longest = MAX_PRESIGNED_EXPIRES_S.get(claim.service, MAX_PRESIGNED_EXPIRES_S["bedrock-agentcore"])
        if not expires.isdigit() or not 1 <= int(expires) <= longest:
            raise IncompleteSignatureError(f"X-Amz-Expires must be a whole number of seconds from 1 to {longest}.")
        claim.expires = int(expires)
        claim.query = [(key, value) for key, value in query if key != "X-Amz-Signature"]
        self._check_signed_headers_present(request, claim)
        return claim

    @staticmethod
    def _check_signed_headers_present(request: SignedRequest, claim: _Claim) -> None:
        if "host" not in claim.signed_headers:
            raise InvalidSignatureError("'Host' must be a 'SignedHeader' in the AWS Authorization.")
        for name in claim.signed_headers:
            if not request.header_values(name):
                raise InvalidSignatureError(f"The signed header '{name}' is missing from the request.")

    # -- scope and time ------------------------------------------------------------------------------------

    def _check_scope_and_time(self, claim: _Claim) -> None:
        if claim.region != self._region:
            raise InvalidSignatureError(
                f"Credential should be scoped to a valid region. This installation answers as '{self._region}'."
            )
        if claim.service not in SERVICES:
            raise InvalidSignatureError("Credential should be scoped to correct service: 'bedrock-agentcore'.")
        signed_at = _signed_at(claim.amz_date)
        if claim.date != claim.amz_date[:8]:
            raise InvalidSignatureError("Date in Credential scope does not match YYYYMMDD from X-Amz-Date.")
        now = self._clock()
        if claim.presigned and claim.expires is not None and now > signed_at + claim.expires:
            raise InvalidSignatureError(
                f"Signature expired: the presigned URL expired at {_stamp(signed_at + claim.expires)}."
            )
        if not claim.presigned and signed_at < now - MAX_SKEW_S:
            raise InvalidSignatureError(
                f"Signature expired: {claim.amz_date} is now earlier than {_stamp(now - MAX_SKEW_S)} "
                f"({_stamp(now)} - 5 min.)"
            )
        if signed_at > now + MAX_SKEW_S:
            raise InvalidSignatureError(
                f"Signature not yet current: {claim.amz_date} is still later than {_stamp(now + MAX_SKEW_S)} "
                f"({_stamp(now)} + 5 min.)"
            )


class _Recomputing:
    """Mixin turning a botocore signer around: headers and payload hash come from the received request."""

    received: HTTPHeaders
    payload_hash: str
    secret: str
    _region_name: str
    _service_name: str

    def headers_to_sign(self, request: AWSRequest) -> HTTPHeaders:
        return self.received

    def payload(self, request: AWSRequest) -> str:
        return self.payload_hash

    def signature(self, string_to_sign: str, request: AWSRequest) -> str:
        key = _signing_key(self.secret, request.context["timestamp"][0:8], self._region_name, self._service_name)
        return hmac.digest(key, string_to_sign.encode("utf-8"), "sha256").hex()


class _Signer(_Recomputing, SigV4Auth):  # type: ignore[misc]  # botocore is untyped: its signers are Any
    pass


class _S3Signer(_Recomputing, S3SigV4Auth):  # type: ignore[misc]  # botocore is untyped: its signers are Any
    pass


def _expected_signature(
    request: SignedRequest, claim: _Claim, key: SigningKey, payload_sha256: str, host: str | None
) -> str:
    signed: dict[str, list[str]] = {}
    for name in claim.signed_headers:
        values = request.header_values(name)
        if name == "host" and host is not None:
            values = [host]
        signed[name] = values
    payload_hash = _payload_hash(request, claim, payload_sha256)
    has_dot_segment, splits_cleanly, canonical_path = _path_facts(request.raw_path)
    if claim.service != "s3" and has_dot_segment:
        # botocore signs such paths normalised, so the signature would cover a different path than the one routed.
        raise InvalidSignatureError("The request path must not contain '.' or '..' segments.")
    url = f"http://hangar.invalid{request.raw_path}"  # the host is signed as a header, never parsed from here
    if not splits_cleanly:
        raise InvalidSignatureError("The request path cannot be canonicalised.")
    query = claim.query if claim.presigned else _query_pairs(request.query_string)
    if claim.service == "s3":
        return _botocore_signature(request, claim, key, signed, payload_hash, url, query)
    canonical = canonical_request(request.method, request.raw_path, query, signed, payload_hash, canonical_path)
    scope = f"{claim.amz_date[0:8]}/{claim.region}/{claim.service}/aws4_request"
    string_to_sign = f"{ALGORITHM}\n{claim.amz_date}\n{scope}\n{hashlib.sha256(canonical.encode()).hexdigest()}"
    signing_key = _signing_key(key.secret, claim.amz_date[0:8], claim.region, claim.service)
    return hmac.digest(signing_key, string_to_sign.encode("utf-8"), "sha256").hex()


def _canonical_query(query: list[tuple[str, str]]) -> str:
    """botocore's canonical query string of decoded (name, value) pairs: encoded again (RFC 3986), sorted."""
    key = tuple(query)
    found = _QUERIES.get(key)
    if found is None:
        pairs = sorted((quote(name, safe="-_.~"), quote(value, safe="-_.~")) for name, value in query)
        found = "&".join(f"{name}={value}" for name, value in pairs)
        if sum(len(name) + len(value) for name, value in query) <= _CACHED_LENGTH:
            if len(_QUERIES) >= _CACHE_LIMIT:
                _QUERIES.clear()
            _QUERIES[key] = found
    return found


def canonical_request(
    method: str,
    raw_path: str,
    query: list[tuple[str, str]],
    signed: dict[str, list[str]],
    payload_hash: str,
    canonical_path: str | None = None,
) -> str:
    """``SigV4Auth.canonical_request`` of the request botocore would rebuild (every service but S3)."""
    names = sorted(set(signed))
    headers = "\n".join(f"{name}:{','.join(' '.join(value.split()) for value in signed[name])}" for name in names)
    return "\n".join(
        (
            method.upper(),
            _path_facts(raw_path)[2] if canonical_path is None else canonical_path,
            _canonical_query(query),
            headers + "\n",
            ";".join(sorted(name.lower().strip() for name in names)),
            payload_hash,
        )
    )


def _botocore_signature(
    request: SignedRequest,
    claim: _Claim,
    key: SigningKey,
    signed: dict[str, list[str]],
    payload_hash: str,
    url: str,
    query: list[tuple[str, str]],
) -> str:
    received = HTTPHeaders()
    for name, values in signed.items():
        for value in values:
            received[name] = value
    signer_class = _S3Signer if claim.service == "s3" else _Signer
    signer = signer_class(
        ReadOnlyCredentials(key.access_key_id, key.secret, claim.security_token), claim.service, claim.region
    )
    signer.received = received
    signer.payload_hash = payload_hash
    signer.secret = key.secret
    aws_request = AWSRequest(method=request.method, url=url, params=[(k, v) for k, v in query])
    aws_request.context["timestamp"] = claim.amz_date
    canonical = signer.canonical_request(aws_request)
    signature: str = signer.signature(signer.string_to_sign(aws_request, canonical), aws_request)
    return signature


# Pure functions of their arguments, cached because every warm invoke would recompute them. Bounded: cleared whole
# when full (a key per (secret, day, region, service) and a path per runtime are few in practice).
_CACHE_LIMIT = 1024
_CACHED_LENGTH = 2048  # longer paths and queries are worked out every time
_SIGNING_KEYS: dict[tuple[str, str, str, str], bytes] = {}
_PATHS: dict[str, tuple[bool, bool, str]] = {}
_QUERIES: dict[tuple[tuple[str, str], ...], str] = {}
_DATES: dict[str, float] = {}


def _signing_key(secret: str, date: str, region: str, service: str) -> bytes:
    """The SigV4 signing key (HMAC chain AWS4+secret, date, region, service, "aws4_request")."""
    cache_key = (secret, date, region, service)
    found = _SIGNING_KEYS.get(cache_key)
    if found is None:
        found = f"AWS4{secret}".encode()
        for part in (date, region, service, "aws4_request"):
            found = hmac.digest(found, part.encode("utf-8"), "sha256")
        if len(_SIGNING_KEYS) >= _CACHE_LIMIT:
            _SIGNING_KEYS.clear()
        _SIGNING_KEYS[cache_key] = found
    return found


def _path_facts(raw_path: str) -> tuple[bool, bool, str]:
    """(has a '.' or '..' segment, percent-encoded or not; ``urlsplit`` gives it back unchanged; botocore's
    canonical URI for every service but S3: dot and empty segments removed, encoded once more)."""
    found = _PATHS.get(raw_path)
    if found is None:
        found = (
            any(unquote(part) in (".", "..") for part in raw_path.split("/")),
            urlsplit(f"http://hangar.invalid{raw_path}").path == raw_path,
            quote(normalize_url_path(raw_path), safe="/~"),
        )
        if len(raw_path) <= _CACHED_LENGTH:
            if len(_PATHS) >= _CACHE_LIMIT:
                _PATHS.clear()
            _PATHS[raw_path] = found
    return found


def _signed_at(amz_date: str) -> float:
    """Epoch seconds of an X-Amz-Date value, parsed as ``datetime.strptime`` parses it."""
    found = _DATES.get(amz_date)
    if found is None:
        try:
            found = datetime.strptime(amz_date, _AMZ_DATE).replace(tzinfo=UTC).timestamp()
        except ValueError:
            raise IncompleteSignatureError(
                "X-Amz-Date must be in the ISO-8601 basic format YYYYMMDDTHHMMSSZ."
            ) from None
        if len(_DATES) >= _CACHE_LIMIT:
            _DATES.clear()
        _DATES[amz_date] = found
    return found


def _payload_hash(request: SignedRequest, claim: _Claim, payload_sha256: str) -> str:
    """The hash the client signed: the body's sha256, or what S3 clients declare in x-amz-content-sha256."""
    declared = request.header_values("x-amz-content-sha256")
    if claim.presigned:
        if claim.service == "s3":
            return str(UNSIGNED_PAYLOAD)
        value = payload_sha256
    elif declared:
        value = declared[0].strip()
        if value != UNSIGNED_PAYLOAD:
            if not _HEX64.match(value):
                raise InvalidSignatureError(f"x-amz-content-sha256 value {value[:40]!r} is not supported here.")
            if not hmac.compare_digest(value, payload_sha256):
                raise InvalidSignatureError(
                    "The provided 'x-amz-content-sha256' header does not match what was computed."
                )
    else:
        value = payload_sha256
    if value == UNSIGNED_PAYLOAD and claim.service != "s3":
        raise InvalidSignatureError("UNSIGNED-PAYLOAD is accepted for the S3 service only.")
    return value


def _claim(credential: str, signed_headers: str, signature: str, amz_date: str) -> _Claim:
    parts = credential.split("/")
    if len(parts) != 5 or parts[4] != "aws4_request" or not all(parts):
        raise IncompleteSignatureError(
            "Credential must have the form <access key id>/<YYYYMMDD>/<region>/<service>/aws4_request."
        )
    names = signed_headers.split(";")
    if not all(names) or names != sorted(set(names)) or any(name != name.lower() for name in names):
        raise IncompleteSignatureError("SignedHeaders must be lower-case header names, sorted, separated by ';'.")
    if not _HEX64.match(signature):
        raise IncompleteSignatureError("Signature must be 64 lower-case hexadecimal characters.")
    return _Claim(
        access_key_id=parts[0],
        date=parts[1],
        region=parts[2],
        service=parts[3],
        signed_headers=names,
        signature=signature,
        amz_date=amz_date,
        security_token=None,
        presigned=False,
    )


def _query_pairs(query_string: str) -> list[tuple[str, str]]:
    """Decoded (name, value) pairs; botocore re-encodes them (RFC 3986) when it builds the canonical query."""
    pairs: list[tuple[str, str]] = []
    for item in query_string.split("&"):
        if not item:
            continue
        name, _, value = item.partition("=")
        pairs.append((unquote(name), unquote(value)))
    return pairs


def _one(request: SignedRequest, name: str) -> str:
    values = request.header_values(name)
    return values[0] if values else ""


def _without_port(host: str) -> str | None:
    if host.startswith("["):
        end = host.find("]")
        return host[: end + 1] if end != -1 and end + 1 < len(host) else None
    name, sep, _ = host.rpartition(":")
    return name if sep else None


def _stamp(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, UTC).strftime(_AMZ_DATE)
