"""Use cases of the identity control plane: workload identities, API-key and OAuth2 providers, the token vault.

Each write is one transaction, and secrets are sealed inside it (see ``vault.Rotation``). Answers never carry a
secret: Get/List report where the secret lives (a Secrets-Manager-style ARN naming the vault entry), not what it is.
Timestamps of these shapes are epoch seconds (``Timestamp`` in the model), unlike the runtimes' ISO strings.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any, Generic, Protocol, TypeVar

import httpx
from sqlalchemy import Connection
from sqlalchemy.exc import IntegrityError

from hangar.domain.arns import Place
from hangar.domain.errors import ConflictError, NotFoundError, ValidationError
from hangar.domain.pagination import decode_token, encode_token
from hangar.identity import commands as c
from hangar.identity.vault import Rotation, Vault
from hangar.identity.vendors import config_key
from hangar.store import identity as rows
from hangar.store.transactions import Store, utcnow

log = logging.getLogger("hangar.identity")

DISCOVERY_TIMEOUT_S = 10.0


def api_key_context(name: str) -> str:
    return f"api-key-provider/{name}/api-key"


def client_secret_context(name: str) -> str:
    return f"oauth2-provider/{name}/client-secret"


@dataclass(frozen=True)
class IdentityPlace:
    """ARNs and URLs of identity resources in this installation."""

    place: Place
    public_url: str

    def workload_arn(self, name: str) -> str:
        return self.place.workload_identity_arn(name)

    def _vault_arn(self) -> str:
        return f"arn:aws:acps:{self.place.region}:{self.place.account_id}:token-vault/default"

    def api_key_arn(self, name: str) -> str:
        return f"{self._vault_arn()}/apikeycredentialprovider/{name}"

    def oauth2_arn(self, name: str) -> str:
        return f"{self._vault_arn()}/oauth2credentialprovider/{name}"

    def secret_arn(self, kind: str, name: str) -> str:
        region, account = self.place.region, self.place.account_id
        return f"arn:aws:secretsmanager:{region}:{account}:secret:bedrock-agentcore-identity!default/{kind}/{name}"

    def callback_url(self, name: str) -> str:
        return f"{self.public_url}/identities/oauth2/callback/{name}"


@dataclass
class IdentityContext:
    store: Store
    where: IdentityPlace
    token_secret: bytes
    vault: Vault
    rotation: Rotation
    fetch_discovery: Callable[[str], dict[str, Any]]


def fetch_discovery(url: str) -> dict[str, Any]:
    """The authorization server's metadata; a clear ValidationException when it cannot be had."""
    try:
        response = httpx.get(url, timeout=DISCOVERY_TIMEOUT_S, follow_redirects=True)
        response.raise_for_status()
        document = response.json()
    except (httpx.HTTPError, ValueError) as exc:
        raise ValidationError(f"Could not read the OAuth2 discovery document at {url}: {exc}") from None
    if not isinstance(document, dict) or not isinstance(document.get("token_endpoint"), str):
        raise ValidationError(f"The discovery document at {url} names no token_endpoint")
    return document


def _epoch(moment: datetime) -> float:
    return moment.timestamp()


# -- what the three kinds of resources share -------------------------------------------------------------------


R = TypeVar("R", rows.WorkloadRow, rows.ApiKeyRow, rows.OAuth2Row)


class _Lister(Protocol[R]):
    def __call__(self, conn: Connection, *, after: str | None, limit: int) -> list[R]: ...


@dataclass(frozen=True)
class _Kind(Generic[R]):
    """One kind of resource: its name in error messages, its rows, its ARN and the scope of its page tokens."""

    label: str
    scope: str
    find: Callable[[Connection, str], R | None]
    remove: Callable[[Connection, str], None]
    page: _Lister[R]
    arn: Callable[[IdentityPlace, str], str]

    def require(self, conn: Connection, name: str) -> R:
        row = self.find(conn, name)
        if row is None:
            raise NotFoundError(f"{self.label} {name} not found")
        return row


def _with_times(document: dict[str, Any], row: R, times: bool) -> dict[str, Any]:
    if times:
        document["createdTime"] = _epoch(row.created_at)
        document["lastUpdatedTime"] = _epoch(row.updated_at)
    return document


def _create(
    ctx: IdentityContext,
    kind: _Kind[R],
    name: str,
    tags: dict[str, str],
    insert: Callable[[Connection], dict[str, Any]],
) -> dict[str, Any]:
    """Insert a resource and its tags; one of that name (even one created meanwhile) is a conflict."""
    conflict = f"{kind.label} {name} already exists"

    def write(conn: Connection) -> dict[str, Any]:
        if kind.find(conn, name) is not None:
            raise ConflictError(conflict)
        document = insert(conn)
        rows.put_tags(conn, kind.arn(ctx.where, name), tags)
        return document

    try:
        return ctx.store.write(write)
    except IntegrityError:
        raise ConflictError(conflict) from None


def _delete(
    ctx: IdentityContext, kind: _Kind[R], name: str, allowed: Callable[[R], None] | None = None
) -> dict[str, Any]:
    """Delete a resource and its tags; ``allowed`` may refuse (raise) after the row is found."""

    def write(conn: Connection) -> dict[str, Any]:
        row = kind.require(conn, name)
        if allowed is not None:
            allowed(row)
        kind.remove(conn, name)
        rows.drop_tags(conn, kind.arn(ctx.where, name))
        return {}

    return ctx.store.write(write)


def _list(
    ctx: IdentityContext,
    kind: _Kind[R],
    command: c.ListWorkloads | c.ListApiKeys | c.ListOAuth2,
    key: str,
    item: Callable[[R], dict[str, Any]],
) -> dict[str, Any]:
    """One page of ``item(row)`` under ``key``, with a sealed ``nextToken`` (the last name shown) when more follow."""

    def read(conn: Connection) -> dict[str, Any]:
        after = decode_token(ctx.token_secret, kind.scope, command.next_token) if command.next_token else None
        page = kind.page(conn, after=after, limit=command.max_results + 1)
        answer: dict[str, Any] = {key: [item(row) for row in page[: command.max_results]]}
        if len(page) > command.max_results:
            answer["nextToken"] = encode_token(ctx.token_secret, kind.scope, page[command.max_results - 1].name)
        return answer

    return ctx.store.read(read)


def _only(document: dict[str, Any], keys: tuple[str, ...]) -> dict[str, Any]:
    return {k: document[k] for k in keys}


_WORKLOADS = _Kind[rows.WorkloadRow](
    label="Workload identity",
    scope="workload-identities",
    find=rows.get_workload,
    remove=rows.delete_workload,
    page=rows.list_workloads,
    arn=IdentityPlace.workload_arn,
)
_API_KEYS = _Kind[rows.ApiKeyRow](
    label="API key credential provider",
    scope="api-key-providers",
    find=rows.get_api_key,
    remove=rows.delete_api_key,
    page=rows.list_api_keys,
    arn=IdentityPlace.api_key_arn,
)
_OAUTH2 = _Kind[rows.OAuth2Row](
    label="OAuth2 credential provider",
    scope="oauth2-providers",
    find=rows.get_oauth2,
    remove=rows.delete_oauth2,
    page=rows.list_oauth2,
    arn=IdentityPlace.oauth2_arn,
)


# -- workload identities ---------------------------------------------------------------------------------------


def _workload_doc(ctx: IdentityContext, row: rows.WorkloadRow, *, times: bool = True) -> dict[str, Any]:
    document: dict[str, Any] = {
        "name": row.name,
        "workloadIdentityArn": ctx.where.workload_arn(row.name),
        "allowedResourceOauth2ReturnUrls": list(row.allowed_return_urls),
    }
    return _with_times(document, row, times)


def create_workload(ctx: IdentityContext, command: c.CreateWorkload) -> dict[str, Any]:
    def insert(conn: Connection) -> dict[str, Any]:
        now = utcnow()
        row = rows.WorkloadRow(command.name, command.return_urls or (), None, now, now)
        rows.insert_workload(conn, row)
        return _workload_doc(ctx, row, times=False)

    return _create(ctx, _WORKLOADS, command.name, command.tags, insert)


def get_workload(ctx: IdentityContext, command: c.GetWorkload) -> dict[str, Any]:
    return ctx.store.read(lambda conn: _workload_doc(ctx, _WORKLOADS.require(conn, command.name)))


def update_workload(ctx: IdentityContext, command: c.UpdateWorkload) -> dict[str, Any]:
    def write(conn: Connection) -> dict[str, Any]:
        row = _WORKLOADS.require(conn, command.name)
        row = replace(row, allowed_return_urls=command.return_urls or (), updated_at=utcnow())
        rows.update_workload(conn, row.name, row.allowed_return_urls, row.updated_at)
        return _workload_doc(ctx, row)

    return ctx.store.write(write)


def _not_a_runtime_identity(row: rows.WorkloadRow) -> None:
    if row.runtime_id is not None:
        raise ValidationError(
            f"Workload identity {row.name} belongs to agent runtime {row.runtime_id}; it goes when the runtime is"
            " deleted",
            reason="CannotDeleteRuntimeIdentity",
        )


def delete_workload(ctx: IdentityContext, command: c.DeleteWorkload) -> dict[str, Any]:
    return _delete(ctx, _WORKLOADS, command.name, _not_a_runtime_identity)


def list_workloads(ctx: IdentityContext, command: c.ListWorkloads) -> dict[str, Any]:
    return _list(
        ctx,
        _WORKLOADS,
        command,
        "workloadIdentities",
        lambda row: {"name": row.name, "workloadIdentityArn": ctx.where.workload_arn(row.name)},
    )


# -- API-key providers -----------------------------------------------------------------------------------------


def _api_key_doc(ctx: IdentityContext, row: rows.ApiKeyRow, *, times: bool = True) -> dict[str, Any]:
    document: dict[str, Any] = {
        "apiKeySecretArn": {"secretArn": ctx.where.secret_arn("apikey", row.name)},
        "apiKeySecretSource": "MANAGED",
        "name": row.name,
        "credentialProviderArn": ctx.where.api_key_arn(row.name),
    }
    return _with_times(document, row, times)


def create_api_key(ctx: IdentityContext, command: c.CreateApiKey) -> dict[str, Any]:
    def insert(conn: Connection) -> dict[str, Any]:
        now = utcnow()
        sealed = ctx.vault.seal(command.api_key.encode(), api_key_context(command.name))
        row = rows.ApiKeyRow(command.name, sealed, now, now)
        rows.insert_api_key(conn, row)
        return _api_key_doc(ctx, row, times=False)

    return _create(ctx, _API_KEYS, command.name, command.tags, insert)


def get_api_key(ctx: IdentityContext, command: c.GetApiKey) -> dict[str, Any]:
    return ctx.store.read(lambda conn: _api_key_doc(ctx, _API_KEYS.require(conn, command.name)))


def update_api_key(ctx: IdentityContext, command: c.UpdateApiKey) -> dict[str, Any]:
    def write(conn: Connection) -> dict[str, Any]:
        row = _API_KEYS.require(conn, command.name)
        row = replace(
            row, api_key_sealed=ctx.vault.seal(command.api_key.encode(), api_key_context(row.name)), updated_at=utcnow()
        )
        rows.update_api_key(conn, row.name, row.api_key_sealed, row.updated_at)
        return _api_key_doc(ctx, row)

    return ctx.store.write(write)


def delete_api_key(ctx: IdentityContext, command: c.DeleteApiKey) -> dict[str, Any]:
    return _delete(ctx, _API_KEYS, command.name)


def list_api_keys(ctx: IdentityContext, command: c.ListApiKeys) -> dict[str, Any]:
    keys = ("name", "credentialProviderArn", "createdTime", "lastUpdatedTime")
    return _list(ctx, _API_KEYS, command, "credentialProviders", lambda row: _only(_api_key_doc(ctx, row), keys))


# -- OAuth2 providers ------------------------------------------------------------------------------------------

# Keys of the stored configuration that the API echoes inside the vendor's output structure.
_ECHOED = ("oauthDiscovery", "clientId", "clientAuthenticationMethod", "onBehalfOfTokenExchangeConfig")


def _oauth2_doc(ctx: IdentityContext, row: rows.OAuth2Row, *, times: bool = True) -> dict[str, Any]:
    output = {k: row.config[k] for k in _ECHOED if k in row.config}
    document: dict[str, Any] = {
        "clientSecretArn": {"secretArn": ctx.where.secret_arn("oauth2", row.name)},
        "clientSecretSource": "MANAGED",
        "name": row.name,
        "credentialProviderVendor": row.vendor,
        "credentialProviderArn": ctx.where.oauth2_arn(row.name),
        "callbackUrl": ctx.where.callback_url(row.name),
        "oauth2ProviderConfigOutput": {config_key(row.vendor): output},
        "status": "READY",
    }
    return _with_times(document, row, times)


def _resolved_config(ctx: IdentityContext, provider: c.OAuth2Input) -> dict[str, Any]:
    """The stored configuration, with a discovery URL's endpoints fetched now (never on a token request)."""
    config = dict(provider.config)
    if provider.discovery_url is not None:
        document = ctx.fetch_discovery(provider.discovery_url)
        methods = [
            m for m in document.get("token_endpoint_auth_methods_supported") or c.AUTH_METHODS if m in c.AUTH_METHODS
        ]
        config["resolved"] = {
            "issuer": document.get("issuer"),
            "authorizationEndpoint": document.get("authorization_endpoint"),
            "tokenEndpoint": document["token_endpoint"],
            "tokenEndpointAuthMethods": methods or list(c.AUTH_METHODS),
        }
    if "resolved" not in config:
        raise ValidationError(f"Vendor {provider.vendor} needs its issuer, authorizationEndpoint and tokenEndpoint")
    return config


def _seal_secret(ctx: IdentityContext, name: str, secret: str | None) -> bytes | None:
    return None if secret is None else ctx.vault.seal(secret.encode(), client_secret_context(name))


def create_oauth2(ctx: IdentityContext, command: c.CreateOAuth2) -> dict[str, Any]:
    config = _resolved_config(ctx, command.provider)

    def insert(conn: Connection) -> dict[str, Any]:
        now = utcnow()
        sealed = _seal_secret(ctx, command.name, command.provider.client_secret)
        row = rows.OAuth2Row(command.name, command.provider.vendor, config, sealed, now, now)
        rows.insert_oauth2(conn, row)
        document = _oauth2_doc(ctx, row, times=False)
        document.pop("credentialProviderVendor")
        return document

    return _create(ctx, _OAUTH2, command.name, command.tags, insert)


def get_oauth2(ctx: IdentityContext, command: c.GetOAuth2) -> dict[str, Any]:
    return ctx.store.read(lambda conn: _oauth2_doc(ctx, _OAUTH2.require(conn, command.name)))


def update_oauth2(ctx: IdentityContext, command: c.UpdateOAuth2) -> dict[str, Any]:
    """Replaces the configuration; without a new clientSecret the stored one stays."""
    config = _resolved_config(ctx, command.provider)

    def write(conn: Connection) -> dict[str, Any]:
        row = _OAUTH2.require(conn, command.name)
        sealed = _seal_secret(ctx, row.name, command.provider.client_secret)
        row = replace(
            row,
            vendor=command.provider.vendor,
            config=config,
            client_secret_sealed=sealed if sealed is not None else row.client_secret_sealed,
            updated_at=utcnow(),
        )
        rows.update_oauth2(conn, row)
        return _oauth2_doc(ctx, row)

    return ctx.store.write(write)


def delete_oauth2(ctx: IdentityContext, command: c.DeleteOAuth2) -> dict[str, Any]:
    return _delete(ctx, _OAUTH2, command.name)


def list_oauth2(ctx: IdentityContext, command: c.ListOAuth2) -> dict[str, Any]:
    keys = ("name", "credentialProviderVendor", "credentialProviderArn", "createdTime", "lastUpdatedTime")
    return _list(ctx, _OAUTH2, command, "credentialProviders", lambda row: _only(_oauth2_doc(ctx, row), keys))


# -- token vault -----------------------------------------------------------------------------------------------


def _vault_doc(ctx: IdentityContext) -> dict[str, Any]:
    ring = ctx.vault.ring
    ring.refresh()
    created = datetime.fromisoformat(ring.keys[ring.current].created_at)
    return {
        "tokenVaultId": "default",
        "kmsConfiguration": {"keyType": "ServiceManagedKey"},
        "lastModifiedDate": _epoch(created),
    }


def _require_vault(vault_id: str) -> None:
    if vault_id != "default":
        raise NotFoundError(f"Token vault {vault_id} not found; Hangar has one, named default")


def get_token_vault(ctx: IdentityContext, command: c.GetTokenVault) -> dict[str, Any]:
    _require_vault(command.vault_id)
    return _vault_doc(ctx)


def reset_token_vault_key(ctx: IdentityContext, command: c.ResetTokenVaultKey) -> dict[str, Any]:
    """AgentCore's ResetTokenVaultKeyMaterial: a key rotation, finished (every secret re-sealed) before answering."""
    _require_vault(command.vault_id)
    ctx.rotation.rotate()
    return _vault_doc(ctx)


_USE_CASES: dict[type, Callable[[IdentityContext, Any], dict[str, Any]]] = {
    c.CreateWorkload: create_workload,
    c.GetWorkload: get_workload,
    c.UpdateWorkload: update_workload,
    c.DeleteWorkload: delete_workload,
    c.ListWorkloads: list_workloads,
    c.CreateApiKey: create_api_key,
    c.GetApiKey: get_api_key,
    c.UpdateApiKey: update_api_key,
    c.DeleteApiKey: delete_api_key,
    c.ListApiKeys: list_api_keys,
    c.CreateOAuth2: create_oauth2,
    c.GetOAuth2: get_oauth2,
    c.UpdateOAuth2: update_oauth2,
    c.DeleteOAuth2: delete_oauth2,
    c.ListOAuth2: list_oauth2,
    c.GetTokenVault: get_token_vault,
    c.ResetTokenVaultKey: reset_token_vault_key,
}


class IdentityControl:
    """Runs identity commands off the event loop."""

    def __init__(self, ctx: IdentityContext) -> None:
        self.ctx = ctx

    async def execute(self, command: Any) -> dict[str, Any]:
        return await asyncio.to_thread(_USE_CASES[type(command)], self.ctx, command)
