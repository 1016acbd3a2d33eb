"""Which inbound headers an agent sees, and the header names the runtime contract defines.

The runtime forwards a request's headers to agent code only when they are safe to expose: transport, caching,
CORS, proxy and AWS-signing headers are held back, as the AgentCore header allowlist says. ``Authorization`` is
always forwarded, under that exact key.
"""

from __future__ import annotations

from collections.abc import Iterable
from urllib.parse import unquote

__all__ = [
    "AUTHORIZATION_HEADER",
    "CUSTOM_HEADER_PREFIX",
    "IDENTITY_WAT_HEADER",
    "OAUTH2_CALLBACK_URL_HEADER",
    "REQUEST_ID_HEADER",
    "RESTRICTED_HEADERS",
    "SESSION_HEADER",
    "WORKLOAD_ACCESS_TOKEN_HEADER",
    "forwardable_headers",
    "is_forwardable_header",
    "parse_baggage",
]

SESSION_HEADER = "X-Amzn-Bedrock-AgentCore-Runtime-Session-Id"
REQUEST_ID_HEADER = "X-Amzn-Bedrock-AgentCore-Runtime-Request-Id"
IDENTITY_WAT_HEADER = "X-Amz-Bedrock-AgentCore-Identity-WAT"
WORKLOAD_ACCESS_TOKEN_HEADER = "WorkloadAccessToken"
OAUTH2_CALLBACK_URL_HEADER = "OAuth2CallbackUrl"
AUTHORIZATION_HEADER = "Authorization"
CUSTOM_HEADER_PREFIX = "X-Amzn-Bedrock-AgentCore-Runtime-Custom-"

_RESTRICTED_GROUPS = {
    "credentials": "proxy-authorization www-authenticate",
    "content negotiation": (
        "accept accept-charset accept-encoding accept-language content-type content-length content-encoding "
        "content-language content-location content-range"
    ),
    "caching": (
        "cache-control etag expires if-match if-modified-since if-none-match if-range if-unmodified-since "
        "last-modified pragma vary"
    ),
    "connection": "connection keep-alive proxy-connection upgrade",
    "request origin": "host user-agent referer from",
    "ranges and transfer": "range accept-ranges transfer-encoding te trailer",
    "server information": "server date location retry-after",
    "cookies": "set-cookie cookie",
    "security policy": (
        "content-security-policy content-security-policy-report-only strict-transport-security "
        "x-content-type-options x-frame-options x-xss-protection referrer-policy permissions-policy "
        "cross-origin-embedder-policy cross-origin-opener-policy cross-origin-resource-policy"
    ),
    "cors": (
        "access-control-allow-origin access-control-allow-methods access-control-allow-headers "
        "access-control-allow-credentials access-control-expose-headers access-control-max-age "
        "access-control-request-method access-control-request-headers origin"
    ),
    "client hints": "accept-ch accept-ch-lifetime dpr width viewport-width downlink ect rtt save-data",
    "deprecated policies": "clear-site-data feature-policy expect-ct public-key-pins public-key-pins-report-only",
    "proxies": (
        "via forwarded x-forwarded-for x-forwarded-host x-forwarded-proto x-real-ip x-requested-with x-csrf-token"
    ),
    "client address spoofing": (
        "true-client-ip x-client-ip x-cluster-client-ip x-originating-ip x-source-ip x-original-url "
        "x-original-host x-rewrite-url"
    ),
    "cdn": "cf-ray cf-connecting-ip x-amz-cf-id x-cache x-served-by",
    "http/2 pseudo headers": ":method :path :scheme :authority :status",
    "server push": "link",
    "websocket handshake": (
        "sec-websocket-key sec-websocket-accept sec-websocket-version sec-websocket-protocol sec-websocket-extensions"
    ),
}

RESTRICTED_HEADERS: frozenset[str] = frozenset(name for group in _RESTRICTED_GROUPS.values() for name in group.split())

_AUTHORIZATION = AUTHORIZATION_HEADER.lower()
_IDENTITY_WAT = IDENTITY_WAT_HEADER.lower()
_CUSTOM_PREFIX = CUSTOM_HEADER_PREFIX.lower()


def is_forwardable_header(name: str) -> bool:
    """True when agent code may see this header (``Authorization`` is handled apart, see ``forwardable_headers``)."""
    lower = name.lower()
    if lower in RESTRICTED_HEADERS:
        return False
    if lower.startswith("x-amz-"):
        return lower == _IDENTITY_WAT  # SigV4 material stays out; the workload token is meant for the agent
    return not lower.startswith("x-amzn-") or lower.startswith(_CUSTOM_PREFIX)


def forwardable_headers(pairs: Iterable[tuple[str, str]]) -> dict[str, str] | None:
    """The headers handed to agent code: lower-case keys (``Authorization`` kept as is), last value wins.

    ``None`` rather than an empty dict when nothing qualifies, as the reference SDK does.
    """
    selected: dict[str, str] = {}
    for name, value in pairs:
        if name.lower() == _AUTHORIZATION:
            selected[AUTHORIZATION_HEADER] = value
        elif is_forwardable_header(name):
            selected[name.lower()] = value
    return selected or None


def parse_baggage(pairs: Iterable[tuple[str, str]]) -> dict[str, list[str]]:
    """Every W3C ``baggage`` entry of the request, percent-decoded, properties dropped, in arrival order.

    Malformed entries (no ``=``, empty key or value) are skipped rather than failing the request.
    """
    entries: dict[str, list[str]] = {}
    for name, value in pairs:
        if name.lower() != "baggage":
            continue
        for member in value.split(","):
            key, sep, raw = member.strip().partition("=")
            key = key.strip()
            decoded = unquote(raw.split(";", 1)[0].strip())
            if sep and key and decoded:
                entries.setdefault(key, []).append(decoded)
    return entries
