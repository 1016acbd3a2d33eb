"""Request shapes of the identity data-plane operations, checked against botocore's ``bedrock-agentcore`` model."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from hangar.domain.validation import Checker

WORKLOAD_NAME = r"[A-Za-z0-9_.-]+"
PROVIDER_NAME = r"[a-zA-Z0-9\-_]+"
JWT_SHAPE = r"[A-Za-z0-9\-_=]+\.[A-Za-z0-9\-_=]+\.[A-Za-z0-9\-_=]+"
SESSION_URI = r"urn:ietf:params:oauth:request_uri:[a-zA-Z0-9\-._~]+"
RETURN_URL = r"\w+:(\/?\/?)[^\s]+"
CUSTOM_PARAMETER = r"[a-zA-Z0-9\-_\.]+"
FLOWS = ("USER_FEDERATION", "M2M", "ON_BEHALF_OF_TOKEN_EXCHANGE")
MAX_TOKEN = 131072


def workload_name(body: dict[str, Any], check: Checker) -> str | None:
    return check.string(
        check.required(body, "workloadName", "workloadName"),
        "workloadName",
        min_len=3,
        max_len=255,
        pattern=WORKLOAD_NAME,
    )


def user_token(value: Any, path: str, check: Checker) -> str | None:
    return check.string(value, path, min_len=1, max_len=MAX_TOKEN, pattern=JWT_SHAPE)


def user_id(value: Any, path: str, check: Checker) -> str | None:
    return check.string(value, path, min_len=1, max_len=128)


def resource_ref(body: dict[str, Any], check: Checker) -> tuple[str | None, str | None]:
    """(workloadIdentityToken, resourceCredentialProviderName)."""
    token = check.string(
        check.required(body, "workloadIdentityToken", "workloadIdentityToken"),
        "workloadIdentityToken",
        min_len=1,
        max_len=MAX_TOKEN,
    )
    provider = check.string(
        check.required(body, "resourceCredentialProviderName", "resourceCredentialProviderName"),
        "resourceCredentialProviderName",
        min_len=1,
        max_len=128,
        pattern=PROVIDER_NAME,
    )
    return token, provider


@dataclass(frozen=True)
class Oauth2TokenRequest:
    workload_token: str = field(repr=False)
    provider: str
    scopes: list[str]
    flow: str
    session_uri: str | None = None
    return_url: str | None = None
    force: bool = False
    custom_parameters: dict[str, str] = field(default_factory=dict, repr=False)
    custom_state: str | None = field(default=None, repr=False)
    resources: list[str] = field(default_factory=list)
    audiences: list[str] = field(default_factory=list)


def oauth2_token_request(body: dict[str, Any]) -> Oauth2TokenRequest:
    check = Checker()
    token, provider = resource_ref(body, check)
    scopes = check.strings(
        check.required(body, "scopes", "scopes"), "scopes", min_items=0, max_items=100, min_len=1, max_len=512
    )
    flow = check.enum(check.required(body, "oauth2Flow", "oauth2Flow"), "oauth2Flow", FLOWS)
    session_uri = check.string(body.get("sessionUri"), "sessionUri", min_len=1, max_len=1024, pattern=SESSION_URI)
    return_url = check.string(
        body.get("resourceOauth2ReturnUrl"), "resourceOauth2ReturnUrl", min_len=1, max_len=2048, pattern=RETURN_URL
    )
    force = check.boolean(body.get("forceAuthentication"), "forceAuthentication")
    custom_state = check.string(body.get("customState"), "customState", min_len=1, max_len=4096)
    parameters: dict[str, str] = {}
    raw = check.mapping(body.get("customParameters"), "customParameters", max_len=50)
    for key, value in (raw or {}).items():
        path = f"customParameters.{key[:64]}"
        if check.string(key, path, min_len=1, max_len=256, pattern=CUSTOM_PARAMETER) is None:
            continue
        found = check.string(value, path, min_len=1, max_len=2048)
        if found is not None:
            parameters[key] = found
    resources = check.strings(body.get("resources"), "resources", min_items=1, max_items=10, min_len=1, max_len=2048)
    audiences = check.strings(body.get("audiences"), "audiences", min_items=1, max_items=10, min_len=1, max_len=2048)
    check.raise_if_any()
    assert token is not None and provider is not None and scopes is not None and flow is not None
    return Oauth2TokenRequest(
        workload_token=token,
        provider=provider,
        scopes=scopes,
        flow=flow,
        session_uri=session_uri,
        return_url=return_url,
        force=bool(force),
        custom_parameters=parameters,
        custom_state=custom_state,
        resources=resources or [],
        audiences=audiences or [],
    )
