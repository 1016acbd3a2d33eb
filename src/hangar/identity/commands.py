"""Typed commands of the identity control plane and the parsers that build them from a JSON body.

Every identity operation is ``POST /identities/<Op>`` with its input in the body. Secrets (``apiKey``,
``clientSecret``) are checked without ever being quoted back in an error message, and commands keep them out of
their ``repr``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

from hangar.domain.errors import InternalError
from hangar.domain.tags import check_tags
from hangar.domain.validation import Checker
from hangar.identity.vendors import ALL_CONFIG_KEYS, INCLUDED_KEY, VENDORS, config_key, well_known

WORKLOAD_NAME = r"[A-Za-z0-9_.-]+"
PROVIDER_NAME = r"[a-zA-Z0-9\-_]+"
RETURN_URL = r"\w+:(\/?\/?)[^\s]+"
VAULT_ID = r"[a-zA-Z0-9\-_]+"
AUTH_METHODS = ("client_secret_basic", "client_secret_post")
CLIENT_AUTH = ("CLIENT_SECRET_BASIC", "CLIENT_SECRET_POST")
UNSUPPORTED = ("privateKeyJwtConfig", "privateEndpoint", "privateEndpointOverrides", "certificateConfigurations")

T = TypeVar("T")


@dataclass(frozen=True)
class CreateWorkload:
    name: str
    return_urls: tuple[str, ...] | None = None
    tags: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class GetWorkload:
    name: str


@dataclass(frozen=True)
class UpdateWorkload:
    name: str
    return_urls: tuple[str, ...] | None = None


@dataclass(frozen=True)
class DeleteWorkload:
    name: str


@dataclass(frozen=True)
class ListWorkloads:
    max_results: int
    next_token: str | None = None


@dataclass(frozen=True)
class CreateApiKey:
    name: str
    api_key: str = field(repr=False)
    tags: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class GetApiKey:
    name: str


@dataclass(frozen=True)
class UpdateApiKey:
    name: str
    api_key: str = field(repr=False)


@dataclass(frozen=True)
class DeleteApiKey:
    name: str


@dataclass(frozen=True)
class ListApiKeys:
    max_results: int
    next_token: str | None = None


@dataclass(frozen=True)
class OAuth2Input:
    """A provider's configuration as stored: everything the API echoes plus the resolved endpoints; no secret."""

    vendor: str
    config: dict[str, Any]
    client_secret: str | None = field(default=None, repr=False)
    discovery_url: str | None = None  # CustomOauth2 by discovery: fetched by the use case before storing


@dataclass(frozen=True)
class CreateOAuth2:
    name: str
    provider: OAuth2Input
    tags: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class GetOAuth2:
    name: str


@dataclass(frozen=True)
class UpdateOAuth2:
    name: str
    provider: OAuth2Input


@dataclass(frozen=True)
class DeleteOAuth2:
    name: str


@dataclass(frozen=True)
class ListOAuth2:
    max_results: int
    next_token: str | None = None


@dataclass(frozen=True)
class GetTokenVault:
    vault_id: str = "default"


@dataclass(frozen=True)
class ResetTokenVaultKey:
    vault_id: str = "default"


# -- helpers ---------------------------------------------------------------------------------------------------


def _checked(build: Callable[[Checker], T]) -> T:
    """Build with one Checker, then raise every problem it found at once (AWS reports them together)."""
    check = Checker()
    built = build(check)
    check.raise_if_any()
    return built


def _tags(check: Checker, body: dict[str, Any]) -> dict[str, str]:
    return check_tags(check, body.get("tags")) or {}


def _secret(check: Checker, value: Any, path: str, max_len: int) -> str | None:
    """A secret string: its problems are reported without quoting it."""
    if value is None:
        return None
    if not isinstance(value, str):
        check.fail(path, "Member must be a string", quote=False)
        return None
    if len(value) > max_len:
        check.fail(path, f"Member must have length less than or equal to {max_len}", quote=False)
        return None
    return value


def _workload_name(check: Checker, body: dict[str, Any]) -> str:
    value = check.required(body, "name", "name")
    return check.string(value, "name", min_len=3, max_len=255, pattern=WORKLOAD_NAME) or ""


def _provider_name(check: Checker, body: dict[str, Any]) -> str:
    value = check.required(body, "name", "name")
    return check.string(value, "name", min_len=1, max_len=128, pattern=PROVIDER_NAME) or ""


def _return_urls(check: Checker, body: dict[str, Any]) -> tuple[str, ...] | None:
    value = body.get("allowedResourceOauth2ReturnUrls")
    if value is None:
        return None
    urls = check.strings(
        value,
        "allowedResourceOauth2ReturnUrls",
        min_items=0,
        max_items=None,
        min_len=1,
        max_len=2048,
        pattern=RETURN_URL,
    )
    return tuple(urls) if urls is not None else ()


def _paging(check: Checker, body: dict[str, Any], maximum: int) -> tuple[int, str | None]:
    max_results = check.integer(body.get("maxResults"), "maxResults", minimum=1, maximum=maximum) or maximum
    token = check.string(body.get("nextToken"), "nextToken", min_len=1, max_len=2048, pattern=r"\S*")
    return max_results, token


def _managed_only(check: Checker, document: dict[str, Any], prefix: str, source_key: str, config_name: str) -> None:
    """Secrets live in Hangar's vault: ``EXTERNAL`` sources (Secrets Manager references) are refused."""
    path = f"{prefix}{source_key}"
    if document.get(config_name) is not None or document.get(source_key) == "EXTERNAL":
        check.fail(path, "Member must be MANAGED: Hangar keeps secrets in its own token vault", quote=False)
    else:
        check.enum(document.get(source_key), path, ("MANAGED", "EXTERNAL"))


# -- workload identities ---------------------------------------------------------------------------------------


def parse_create_workload(body: dict[str, Any]) -> CreateWorkload:
    return _checked(
        lambda check: CreateWorkload(_workload_name(check, body), _return_urls(check, body), _tags(check, body))
    )


def parse_get_workload(body: dict[str, Any]) -> GetWorkload:
    return _checked(lambda check: GetWorkload(_workload_name(check, body)))


def parse_update_workload(body: dict[str, Any]) -> UpdateWorkload:
    return _checked(lambda check: UpdateWorkload(_workload_name(check, body), _return_urls(check, body)))


def parse_delete_workload(body: dict[str, Any]) -> DeleteWorkload:
    return _checked(lambda check: DeleteWorkload(_workload_name(check, body)))


def parse_list_workloads(body: dict[str, Any]) -> ListWorkloads:
    return _checked(lambda check: ListWorkloads(*_paging(check, body, 20)))


# -- API-key providers -----------------------------------------------------------------------------------------


def _api_key(check: Checker, body: dict[str, Any]) -> str:
    _managed_only(check, body, "", "apiKeySecretSource", "apiKeySecretConfig")
    if body.get("apiKey") is None:
        check.fail_null("apiKey")
    return _secret(check, body.get("apiKey"), "apiKey", 65536) or ""


def parse_create_api_key(body: dict[str, Any]) -> CreateApiKey:
    return _checked(lambda check: CreateApiKey(_provider_name(check, body), _api_key(check, body), _tags(check, body)))


def parse_update_api_key(body: dict[str, Any]) -> UpdateApiKey:
    return _checked(lambda check: UpdateApiKey(_provider_name(check, body), _api_key(check, body)))


def parse_get_api_key(body: dict[str, Any]) -> GetApiKey:
    return _checked(lambda check: GetApiKey(_provider_name(check, body)))


def parse_delete_api_key(body: dict[str, Any]) -> DeleteApiKey:
    return _checked(lambda check: DeleteApiKey(_provider_name(check, body)))


def parse_list_api_keys(body: dict[str, Any]) -> ListApiKeys:
    return _checked(lambda check: ListApiKeys(*_paging(check, body, 100)))


# -- OAuth2 providers ------------------------------------------------------------------------------------------


def _url(check: Checker, value: Any, path: str, *, required: bool = True) -> str | None:
    if value is None:
        if required:
            check.fail_null(path)
        return None
    return check.string(value, path, min_len=1, max_len=2048, pattern=r"https?://\S+")


def _metadata(check: Checker, value: Any, path: str) -> dict[str, Any] | None:
    found = check.struct(value, path)
    if found is None:
        return None
    out: dict[str, Any] = {
        "issuer": _url(check, found.get("issuer"), f"{path}.issuer"),
        "authorizationEndpoint": _url(check, found.get("authorizationEndpoint"), f"{path}.authorizationEndpoint"),
        "tokenEndpoint": _url(check, found.get("tokenEndpoint"), f"{path}.tokenEndpoint"),
    }
    types = check.strings(found.get("responseTypes"), f"{path}.responseTypes", min_items=0, max_items=None, min_len=1)
    if types is not None:
        out["responseTypes"] = types
    methods = check.strings(
        found.get("tokenEndpointAuthMethods"),
        f"{path}.tokenEndpointAuthMethods",
        min_items=1,
        max_items=2,
        pattern="(client_secret_post|client_secret_basic)",
    )
    if methods is not None:
        out["tokenEndpointAuthMethods"] = methods
    return out


def _custom(check: Checker, config: dict[str, Any], path: str) -> tuple[dict[str, Any], str | None]:
    """``customOauth2ProviderConfig`` → (stored config, discovery URL to fetch or None)."""
    stored: dict[str, Any] = {}
    client_id = check.string(config.get("clientId"), f"{path}.clientId", min_len=0, max_len=256)
    if client_id is not None:
        stored["clientId"] = client_id
    discovery = check.struct(
        check.required(config, "oauthDiscovery", f"{path}.oauthDiscovery"), f"{path}.oauthDiscovery"
    )
    url = None
    if discovery is not None:
        member = check.union(discovery, f"{path}.oauthDiscovery", ("discoveryUrl", "authorizationServerMetadata"))
        if member == "discoveryUrl":
            url = check.string(
                discovery["discoveryUrl"],
                f"{path}.oauthDiscovery.discoveryUrl",
                pattern=r"[^\s?#]+/\.well-known/(openid-configuration|oauth-authorization-server)(/[^\s?#]+)?",
            )
            if url is not None:
                stored["oauthDiscovery"] = {"discoveryUrl": url}
        elif member == "authorizationServerMetadata":
            metadata = _metadata(check, discovery[member], f"{path}.oauthDiscovery.authorizationServerMetadata")
            if metadata is not None:
                stored["oauthDiscovery"] = {"authorizationServerMetadata": metadata}
                stored["resolved"] = {
                    "issuer": metadata["issuer"],
                    "authorizationEndpoint": metadata["authorizationEndpoint"],
                    "tokenEndpoint": metadata["tokenEndpoint"],
                    "tokenEndpointAuthMethods": metadata.get("tokenEndpointAuthMethods", list(AUTH_METHODS)),
                }
    method = check.enum(
        config.get("clientAuthenticationMethod"),
        f"{path}.clientAuthenticationMethod",
        (*CLIENT_AUTH, "AWS_IAM_ID_TOKEN_JWT", "PRIVATE_KEY_JWT"),
    )
    if method is not None and method not in CLIENT_AUTH:
        check.fail(
            f"{path}.clientAuthenticationMethod",
            "Member must be CLIENT_SECRET_BASIC or CLIENT_SECRET_POST in Hangar",
            method,
        )
    elif method is not None:
        stored["clientAuthenticationMethod"] = method
    exchange = check.struct(config.get("onBehalfOfTokenExchangeConfig"), f"{path}.onBehalfOfTokenExchangeConfig")
    if exchange is not None:
        check.enum(
            check.required(exchange, "grantType", f"{path}.onBehalfOfTokenExchangeConfig.grantType"),
            f"{path}.onBehalfOfTokenExchangeConfig.grantType",
            ("TOKEN_EXCHANGE", "JWT_AUTHORIZATION_GRANT"),
        )
        stored["onBehalfOfTokenExchangeConfig"] = exchange
    for unsupported in UNSUPPORTED:
        if config.get(unsupported) is not None:
            check.fail(
                f"{path}.{unsupported}",
                "Member is not supported by Hangar (no KMS, VPC Lattice or S3 here)",
                quote=False,
            )
    return stored, url


def _built_in(check: Checker, vendor: str, config: dict[str, Any], path: str) -> dict[str, Any]:
    stored: dict[str, Any] = {}
    client_id = check.string(
        check.required(config, "clientId", f"{path}.clientId"), f"{path}.clientId", min_len=1, max_len=256
    )
    if client_id is not None:
        stored["clientId"] = client_id
    tenant = (
        check.string(config.get("tenantId"), f"{path}.tenantId", min_len=1, max_len=2048)
        if vendor == "MicrosoftOauth2"
        else None
    )
    if tenant is not None:
        stored["tenantId"] = tenant
    known = well_known(vendor, tenant)
    explicit = {}
    if config_key(vendor) == INCLUDED_KEY:
        required = known is None
        explicit = {
            "issuer": _url(check, config.get("issuer"), f"{path}.issuer", required=required),
            "authorizationEndpoint": _url(
                check, config.get("authorizationEndpoint"), f"{path}.authorizationEndpoint", required=required
            ),
            "tokenEndpoint": _url(check, config.get("tokenEndpoint"), f"{path}.tokenEndpoint", required=required),
        }
    defaults = {}
    if known is not None:
        defaults = {
            "issuer": known.issuer,
            "authorizationEndpoint": known.authorization_endpoint,
            "tokenEndpoint": known.token_endpoint,
        }
    resolved = {
        key: explicit.get(key) or defaults.get(key) for key in ("issuer", "authorizationEndpoint", "tokenEndpoint")
    }
    if all(resolved.values()):
        stored["resolved"] = {**resolved, "tokenEndpointAuthMethods": list(AUTH_METHODS)}
        stored["oauthDiscovery"] = {"authorizationServerMetadata": {**resolved, "responseTypes": ["code"]}}
    return stored


def _oauth2_input(check: Checker, body: dict[str, Any]) -> OAuth2Input | None:
    vendor = check.enum(
        check.required(body, "credentialProviderVendor", "credentialProviderVendor"),
        "credentialProviderVendor",
        VENDORS,
    )
    wrapper = check.struct(
        check.required(body, "oauth2ProviderConfigInput", "oauth2ProviderConfigInput"), "oauth2ProviderConfigInput"
    )
    if vendor is None or wrapper is None:
        return None
    member = check.union(wrapper, "oauth2ProviderConfigInput", ALL_CONFIG_KEYS)
    if member is None:
        return None
    path = f"oauth2ProviderConfigInput.{member}"
    if member != config_key(vendor):
        check.fail(path, f"Member must be {config_key(vendor)} for vendor {vendor}", quote=False)
        return None
    config = check.struct(wrapper[member], path)
    if config is None:
        return None
    _managed_only(check, config, f"{path}.", "clientSecretSource", "clientSecretConfig")
    secret = _secret(check, config.get("clientSecret"), f"{path}.clientSecret", 2048)
    if vendor == "CustomOauth2":
        stored, url = _custom(check, config, path)
    else:
        stored, url = _built_in(check, vendor, config, path), None
    return OAuth2Input(vendor=vendor, config=stored, client_secret=secret, discovery_url=url)


def _configured(provider: OAuth2Input | None) -> OAuth2Input:
    """A provider's configuration once the Checker found no problem (only a bug in the parser leaves none)."""
    if provider is None:
        raise InternalError("an OAuth2 provider passed validation without a configuration")
    return provider


def parse_create_oauth2(body: dict[str, Any]) -> CreateOAuth2:
    name, provider, tags = _checked(
        lambda check: (_provider_name(check, body), _oauth2_input(check, body), _tags(check, body))
    )
    return CreateOAuth2(name, _configured(provider), tags)


def parse_update_oauth2(body: dict[str, Any]) -> UpdateOAuth2:
    name, provider = _checked(lambda check: (_provider_name(check, body), _oauth2_input(check, body)))
    return UpdateOAuth2(name, _configured(provider))


def parse_get_oauth2(body: dict[str, Any]) -> GetOAuth2:
    return _checked(lambda check: GetOAuth2(_provider_name(check, body)))


def parse_delete_oauth2(body: dict[str, Any]) -> DeleteOAuth2:
    return _checked(lambda check: DeleteOAuth2(_provider_name(check, body)))


def parse_list_oauth2(body: dict[str, Any]) -> ListOAuth2:
    return _checked(lambda check: ListOAuth2(*_paging(check, body, 20)))


# -- token vault -----------------------------------------------------------------------------------------------


def _vault_id(check: Checker, value: Any) -> str:
    return check.string(value, "tokenVaultId", min_len=1, max_len=64, pattern=VAULT_ID) or "default"


def parse_get_token_vault(body: dict[str, Any]) -> GetTokenVault:
    return _checked(lambda check: GetTokenVault(_vault_id(check, body.get("tokenVaultId"))))


def parse_reset_token_vault_key(body: dict[str, Any]) -> ResetTokenVaultKey:
    return _checked(
        lambda check: ResetTokenVaultKey(_vault_id(check, check.required(body, "tokenVaultId", "tokenVaultId")))
    )
