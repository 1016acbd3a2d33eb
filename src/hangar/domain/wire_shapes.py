"""Checks of the nested optional members of a runtime: inbound JWT authorizer, header allowlist, newer structs."""

from __future__ import annotations

from typing import Any

from hangar.domain.validation import Checker

DISCOVERY_URL = r"[^\s?#]+/\.well-known/(openid-configuration|oauth-authorization-server)(/[^\s?#]+)?"
SCOPE = r"[\x21\x23-\x5B\x5D-\x7E]+"
CLAIM_NAME = r"[A-Za-z0-9_.\-:]+"
CLAIM_VALUE = r"[A-Za-z0-9_.-]+"
HEADER_NAME = r"[A-Za-z][A-Za-z0-9_-]{0,255}"
CUSTOM_HEADER_PREFIX = "x-amzn-bedrock-agentcore-runtime-custom-"
# Headers the platform owns; an agent never gets them from the allowlist.
RESTRICTED_HEADERS = frozenset(
    {
        "accept",
        "accept-encoding",
        "connection",
        "content-length",
        "content-type",
        "cookie",
        "expect",
        "host",
        "keep-alive",
        "proxy-authenticate",
        "proxy-authorization",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
        "via",
        "forwarded",
        "x-forwarded-for",
        "x-forwarded-host",
        "x-forwarded-proto",
    }
)


def check_authorizer(check: Checker, value: Any) -> dict[str, Any] | None:
    """``authorizerConfiguration`` (union with one member, customJWTAuthorizer); returned as given when valid."""
    path = "authorizerConfiguration"
    config = check.struct(value, path)
    if config is None:
        return None
    if check.union(config, path, ("customJWTAuthorizer",)) is None:
        return None
    jwt_path = f"{path}.customJWTAuthorizer"
    jwt = check.struct(config["customJWTAuthorizer"], jwt_path)
    if jwt is None:
        return None
    before = len(check.problems)
    check.string(
        check.required(jwt, "discoveryUrl", f"{jwt_path}.discoveryUrl"),
        f"{jwt_path}.discoveryUrl",
        min_len=1,
        max_len=2048,
        pattern=DISCOVERY_URL,
    )
    check.strings(
        jwt.get("allowedAudience"), f"{jwt_path}.allowedAudience", min_items=1, max_items=None, min_len=1, max_len=1024
    )
    check.strings(
        jwt.get("allowedClients"), f"{jwt_path}.allowedClients", min_items=1, max_items=None, min_len=1, max_len=1024
    )
    check.strings(
        jwt.get("allowedScopes"),
        f"{jwt_path}.allowedScopes",
        min_items=1,
        max_items=None,
        min_len=1,
        max_len=255,
        pattern=SCOPE,
    )
    claims = check.array(jwt.get("customClaims"), f"{jwt_path}.customClaims", min_len=1)
    for index, claim in enumerate(claims or []):
        _check_claim(check, claim, f"{jwt_path}.customClaims.{index + 1}.member")
    return config if len(check.problems) == before else None


def _check_claim(check: Checker, value: Any, path: str) -> None:
    claim = check.struct(value, path)
    if claim is None:
        return
    check.string(
        check.required(claim, "inboundTokenClaimName", f"{path}.inboundTokenClaimName"),
        f"{path}.inboundTokenClaimName",
        min_len=1,
        max_len=255,
        pattern=CLAIM_NAME,
    )
    check.enum(
        check.required(claim, "inboundTokenClaimValueType", f"{path}.inboundTokenClaimValueType"),
        f"{path}.inboundTokenClaimValueType",
        ("STRING", "STRING_ARRAY"),
    )
    match_path = f"{path}.authorizingClaimMatchValue"
    match = check.struct(check.required(claim, "authorizingClaimMatchValue", match_path), match_path)
    if match is None:
        return
    check.enum(
        check.required(match, "claimMatchOperator", f"{match_path}.claimMatchOperator"),
        f"{match_path}.claimMatchOperator",
        ("EQUALS", "CONTAINS", "CONTAINS_ANY"),
    )
    value_path = f"{match_path}.claimMatchValue"
    match_value = check.struct(check.required(match, "claimMatchValue", value_path), value_path)
    if match_value is None:
        return
    kind = check.union(match_value, value_path, ("matchValueString", "matchValueStringList"))
    if kind == "matchValueString":
        check.string(match_value[kind], f"{value_path}.{kind}", min_len=1, max_len=255, pattern=CLAIM_VALUE)
    elif kind == "matchValueStringList":
        check.strings(
            match_value[kind],
            f"{value_path}.{kind}",
            min_items=1,
            max_items=255,
            min_len=1,
            max_len=255,
            pattern=CLAIM_VALUE,
        )


def check_request_headers(check: Checker, value: Any, *, jwt: bool) -> dict[str, Any] | None:
    """``requestHeaderConfiguration``: which inbound headers reach the agent (AgentCore's allowlist rules)."""
    path = "requestHeaderConfiguration"
    config = check.struct(value, path)
    if config is None or check.union(config, path, ("requestHeaderAllowlist",)) is None:
        return None
    list_path = f"{path}.requestHeaderAllowlist"
    names = check.strings(
        config["requestHeaderAllowlist"],
        list_path,
        min_items=1,
        max_items=20,
        min_len=1,
        max_len=256,
        pattern=HEADER_NAME,
    )
    if names is None:
        return None
    seen: set[str] = set()
    ok = True
    for index, name in enumerate(names):
        member = f"{list_path}.{index + 1}.member"
        lower = name.lower()
        problem = None
        if lower in seen:
            problem = "Header names must be unique (case-insensitive)"
        elif lower in RESTRICTED_HEADERS:
            problem = "Member must not be a header the platform manages"
        elif lower.startswith("x-amzn-") and not lower.startswith(CUSTOM_HEADER_PREFIX):
            problem = (
                "Member must not start with X-Amzn- unless it starts with X-Amzn-Bedrock-AgentCore-Runtime-Custom-"
            )
        elif lower.startswith("x-amz-"):
            problem = "Member must not start with X-Amz-"
        elif lower == "authorization" and not jwt:
            problem = "Authorization may be allowed only for runtimes with a customJWTAuthorizer"
        if problem is not None:
            check.fail(member, problem, name)
            ok = False
        seen.add(lower)
    return {"requestHeaderAllowlist": names} if ok else None


def check_extras(check: Checker, body: dict[str, Any]) -> dict[str, Any]:
    """The newer optional members: checked for shape and range, stored and echoed as given."""
    out: dict[str, Any] = {}
    for name in ("hooksConfiguration", "metadataConfiguration", "capacityProviderConfiguration"):
        found = check.struct(body.get(name), name)
        if found is not None:
            out[name] = found
    capacity = out.get("capacityProviderConfiguration")
    if capacity is not None:
        check.string(
            check.required(capacity, "capacityProviderArn", "capacityProviderConfiguration.capacityProviderArn"),
            "capacityProviderConfiguration.capacityProviderArn",
            min_len=1,
            max_len=2048,
        )
    platform = check.string(body.get("platformVersion"), "platformVersion", min_len=1, max_len=128, pattern=r"[^\s]+")
    if platform is not None:
        out["platformVersion"] = platform
    filesystems = check.array(body.get("filesystemConfigurations"), "filesystemConfigurations", max_len=5)
    if filesystems is not None:
        for index, item in enumerate(filesystems):
            check.struct(item, f"filesystemConfigurations.{index + 1}.member")
        out["filesystemConfigurations"] = filesystems
    resources = check.array(body.get("resourceConfigurations"), "resourceConfigurations", max_len=1)
    if resources is not None:
        for index, item in enumerate(resources):
            member = f"resourceConfigurations.{index + 1}.member"
            found = check.struct(item, member)
            if found is not None:
                check.integer(
                    check.required(found, "minimumMemoryInMiB", f"{member}.minimumMemoryInMiB"),
                    f"{member}.minimumMemoryInMiB",
                    minimum=1,
                    maximum=1 << 30,
                )
        out["resourceConfigurations"] = resources
    ports = check.array(body.get("allowedPorts"), "allowedPorts", min_len=1, max_len=5)
    if ports is not None:
        for index, item in enumerate(ports):
            _check_allowed_port(check, item, f"allowedPorts.{index + 1}.member")
        out["allowedPorts"] = ports
    return out


def _check_allowed_port(check: Checker, value: Any, path: str) -> None:
    port = check.struct(value, path)
    if port is None:
        return
    kind = check.union(port, path, ("port", "portRange"))
    if kind == "port":
        check.integer(port["port"], f"{path}.port", minimum=8000, maximum=12000)
    elif kind == "portRange":
        span = check.struct(port["portRange"], f"{path}.portRange")
        if span is None:
            return
        low = check.integer(
            check.required(span, "from", f"{path}.portRange.from"),
            f"{path}.portRange.from",
            minimum=8000,
            maximum=12000,
        )
        high = check.integer(
            check.required(span, "to", f"{path}.portRange.to"), f"{path}.portRange.to", minimum=8000, maximum=12000
        )
        if low is not None and high is not None and low > high:
            check.fail(f"{path}.portRange", "from must be less than or equal to to", quote=False)
