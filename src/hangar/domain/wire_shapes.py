"""Checks of the nested optional members of a runtime: inbound JWT authorizer, header allowlist, newer structs."""

from __future__ import annotations

import itertools
import os
import platform
from typing import Any

from hangar.domain.filesystems import check_filesystems
from hangar.domain.invocation import PROTOCOL_DEFAULTS
from hangar.domain.validation import Checker

DISCOVERY_URL = r"[^\s?#]+/\.well-known/(openid-configuration|oauth-authorization-server)(/[^\s?#]+)?"
SCOPE = r"[\x21\x23-\x5B\x5D-\x7E]+"
CLAIM_NAME = r"[A-Za-z0-9_.\-:]+"
CLAIM_VALUE = r"[A-Za-z0-9_.-]+"
HEADER_NAME = r"[A-Za-z][A-Za-z0-9_-]{0,255}"
HOOK_PATH = r"/[A-Za-z0-9._~/-]*"
WORKLOAD_IDENTITY_TEMPLATE_ARN = (
    r"arn:aws(-[^:]+)?:iam::([0-9]{12}|o-[a-z0-9]{10,32}):workload-identity-template/[a-zA-Z0-9_+=,.@/-]+"
)
ARCHITECTURES = ("ARM64", "X86_64")
PORT_MIN = 8000
PORT_MAX = 12000
RESERVED_PORT = 8443
INT32_MAX = 2**31 - 1
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
    """The newer optional members, checked as botocore's model says; each kept (in wire form) when valid."""
    out: dict[str, Any] = {}
    found: dict[str, Any] = {
        "hooksConfiguration": _check_hooks(check, body.get("hooksConfiguration")),
        "metadataConfiguration": _check_metadata(check, body.get("metadataConfiguration")),
        "capacityProviderConfiguration": check.struct(
            body.get("capacityProviderConfiguration"), "capacityProviderConfiguration"
        ),
        "platformVersion": check.string(
            body.get("platformVersion"), "platformVersion", min_len=1, max_len=128, pattern=r"[^\s]+"
        ),
        "workloadIdentityTemplateArn": check.string(
            body.get("workloadIdentityTemplateArn"),
            "workloadIdentityTemplateArn",
            min_len=1,
            max_len=1011,
            pattern=WORKLOAD_IDENTITY_TEMPLATE_ARN,
        ),
        "cpuConfigurations": _check_cpu(check, body.get("cpuConfigurations")),
        "resourceConfigurations": _check_resources(check, body.get("resourceConfigurations")),
        "allowedPorts": _check_allowed_ports(check, body.get("allowedPorts")),
    }
    capacity = found["capacityProviderConfiguration"]
    if capacity is not None:
        check.string(
            check.required(capacity, "capacityProviderArn", "capacityProviderConfiguration.capacityProviderArn"),
            "capacityProviderConfiguration.capacityProviderArn",
            min_len=1,
            max_len=2048,
        )
    found["filesystemConfigurations"] = check_filesystems(check, body.get("filesystemConfigurations"))
    for name, value in found.items():
        if value is not None:
            out[name] = value
    return out


def _check_hooks(check: Checker, value: Any) -> dict[str, Any] | None:
    """``hooksConfiguration{build{warmup{action{httpPost{path, port}}}}}``, stored and returned (not run yet)."""
    path = "hooksConfiguration"
    hooks = check.struct(value, path)
    if hooks is None:
        return None
    out: dict[str, Any] = {}
    build = check.struct(hooks.get("build"), f"{path}.build")
    if build is None:
        return out
    out["build"] = {}
    warmup_path = f"{path}.build.warmup"
    warmup = check.struct(build.get("warmup"), warmup_path)
    if warmup is None:
        return out
    action_path = f"{warmup_path}.action"
    action = check.struct(check.required(warmup, "action", action_path), action_path)
    if action is None or check.union(action, action_path, ("httpPost",)) is None:
        return None
    post_path = f"{action_path}.httpPost"
    post = check.struct(action["httpPost"], post_path)
    if post is None:
        return None
    hook_path = check.string(
        check.required(post, "path", f"{post_path}.path"),
        f"{post_path}.path",
        min_len=1,
        max_len=32,
        pattern=HOOK_PATH,
    )
    port = check.integer(post.get("port"), f"{post_path}.port", minimum=PORT_MIN, maximum=PORT_MAX)
    if hook_path is None or (post.get("port") is not None and port is None):
        return None
    http_post: dict[str, Any] = {"path": hook_path}
    if port is not None:
        http_post["port"] = port
    out["build"]["warmup"] = {"action": {"httpPost": http_post}}
    return out


def check_hook_paths(check: Checker, hooks: dict[str, Any] | None, protocol: dict[str, Any]) -> None:
    """A warmup hook must not be a path the agent already serves on its port (its invocation path or /ping)."""
    post = (((hooks or {}).get("build") or {}).get("warmup") or {}).get("action", {}).get("httpPost")
    if post is None:
        return
    default_port, default_path = PROTOCOL_DEFAULTS[protocol["serverProtocol"]]
    server_port = protocol.get("port", default_port)
    if post.get("port", server_port) != server_port:
        return
    taken = {protocol.get("path", default_path), "/ping"}
    if post["path"] in taken:
        check.fail(
            "hooksConfiguration.build.warmup.action.httpPost.path",
            "Member must not be a path the agent already serves on its port (the invocation path or /ping)",
            post["path"],
        )


def _check_metadata(check: Checker, value: Any) -> dict[str, Any] | None:
    """``metadataConfiguration{requireMMDSV2}``: stored and returned; Hangar has no metadata service to harden."""
    path = "metadataConfiguration"
    metadata = check.struct(value, path)
    if metadata is None:
        return None
    required = check.boolean(
        check.required(metadata, "requireMMDSV2", f"{path}.requireMMDSV2"), f"{path}.requireMMDSV2"
    )
    return None if required is None else {"requireMMDSV2": required}


def host_architecture() -> str | None:
    """The AgentCore name of this host's CPU architecture (sessions run on it); None if it has none."""
    return {"x86_64": "X86_64", "amd64": "X86_64", "aarch64": "ARM64", "arm64": "ARM64"}.get(platform.machine().lower())


def host_memory_mib() -> int:
    """This host's physical memory: no session's sandbox can be given more."""
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") // (1024 * 1024)


def _check_cpu(check: Checker, value: Any) -> list[dict[str, str]] | None:
    """``cpuConfigurations[0..1]{architecture}``: sessions run on this host's CPU, so only its architecture."""
    path = "cpuConfigurations"
    items = check.array(value, path, min_len=0, max_len=1)
    if items is None:
        return None
    out: list[dict[str, str]] = []
    for index, item in enumerate(items):
        member = f"{path}.{index + 1}.member"
        if item is None:
            check.fail_null(member)
            return None
        cpu = check.struct(item, member)
        if cpu is None:
            return None
        arch = check.enum(
            check.required(cpu, "architecture", f"{member}.architecture"), f"{member}.architecture", ARCHITECTURES
        )
        if arch is None:
            return None
        host = host_architecture()
        if arch != host:
            check.fail(
                f"{member}.architecture",
                f"Member must be this Hangar host's architecture ({host}): sessions run on the host's own CPU",
                arch,
            )
            return None
        out.append({"architecture": arch})
    return out


def _check_resources(check: Checker, value: Any) -> list[dict[str, int]] | None:
    """``resourceConfigurations[0..1]{minimumMemoryInMiB}``: the memory limit of each session's sandbox."""
    path = "resourceConfigurations"
    items = check.array(value, path, min_len=0, max_len=1)
    if items is None:
        return None
    out: list[dict[str, int]] = []
    for index, item in enumerate(items):
        member = f"{path}.{index + 1}.member"
        if item is None:
            check.fail_null(member)
            return None
        found = check.struct(item, member)
        if found is None:
            return None
        mib = check.integer(
            check.required(found, "minimumMemoryInMiB", f"{member}.minimumMemoryInMiB"),
            f"{member}.minimumMemoryInMiB",
            minimum=1,
            maximum=INT32_MAX,
        )
        if mib is None:
            return None
        ceiling = host_memory_mib()
        if mib > ceiling:
            check.fail(
                f"{member}.minimumMemoryInMiB",
                f"Member must be at most this host's memory ({ceiling} MiB): a session's sandbox cannot get more",
                mib,
            )
            return None
        out.append({"minimumMemoryInMiB": mib})
    return out


def _check_allowed_ports(check: Checker, value: Any) -> list[dict[str, Any]] | None:
    """``allowedPorts[1..5]``: checked as the model says, then refused: Hangar has no session URL for more ports."""
    path = "allowedPorts"
    items = check.array(value, path, min_len=1, max_len=5)
    if items is None:
        return None
    spans: list[tuple[int, int, str]] = []
    for index, item in enumerate(items):
        member = f"{path}.{index + 1}.member"
        if item is None:
            check.fail_null(member)
            return None
        span = _check_allowed_port(check, item, member)
        if span is None:
            return None
        spans.append((*span, member))
    spans.sort()
    for (_, high, _), (low, _, member) in itertools.pairwise(spans):
        if low <= high:
            check.fail(member, "Member must not overlap another allowed port or port range", quote=False)
            return None
    check.fail(
        path,
        "Hangar cannot honour allowedPorts: it serves a session only on protocolConfiguration.port and has no "
        "session URL for additional ports; remove the member",
        quote=False,
    )
    return None


def _check_allowed_port(check: Checker, value: Any, path: str) -> tuple[int, int] | None:
    port = check.struct(value, path)
    if port is None:
        return None
    kind = check.union(port, path, ("port", "portRange"))
    if kind == "port":
        single = _port(check, port["port"], f"{path}.port")
        return None if single is None else (single, single)
    if kind == "portRange":
        span = check.struct(port["portRange"], f"{path}.portRange")
        if span is None:
            return None
        low = _port(check, check.required(span, "from", f"{path}.portRange.from"), f"{path}.portRange.from")
        high = _port(check, check.required(span, "to", f"{path}.portRange.to"), f"{path}.portRange.to")
        if low is None or high is None:
            return None
        if low > high:
            check.fail(f"{path}.portRange", "from must be less than or equal to to", quote=False)
            return None
        if low <= RESERVED_PORT <= high:
            check.fail(f"{path}.portRange", f"Member must not include the reserved port {RESERVED_PORT}", quote=False)
            return None
        return (low, high)
    return None


def _port(check: Checker, value: Any, path: str) -> int | None:
    port = check.integer(value, path, minimum=PORT_MIN, maximum=PORT_MAX)
    if port == RESERVED_PORT:
        check.fail(path, f"Member must not be the reserved port {RESERVED_PORT}", port)
        return None
    return port
