"""``Directory``: the data plane's read-only look-ups of workload identities and providers, secrets opened."""

from __future__ import annotations

from hangar.domain.errors import NotFoundError
from hangar.identity.control import IdentityPlace, api_key_context, client_secret_context
from hangar.identity.ports import OAuth2Client, WorkloadIdentity
from hangar.identity.vault import Vault
from hangar.store import identity as rows
from hangar.store.transactions import Store


class StoreDirectory:
    """Each look-up reads the store afresh, so an update or a delete is seen by the next token request."""

    def __init__(self, store: Store, vault: Vault, where: IdentityPlace) -> None:
        self.store = store
        self.vault = vault
        self.where = where

    def workload(self, name: str) -> WorkloadIdentity:
        row = self.store.read(lambda conn: rows.get_workload(conn, name))
        if row is None:
            raise NotFoundError(f"Workload identity {name} not found")
        return WorkloadIdentity(
            name=row.name, arn=self.where.workload_arn(row.name), allowed_return_urls=row.allowed_return_urls
        )

    def api_key(self, provider_name: str) -> str:
        row = self.store.read(lambda conn: rows.get_api_key(conn, provider_name))
        if row is None:
            raise NotFoundError(f"API key credential provider {provider_name} not found")
        return self.vault.open(row.api_key_sealed, api_key_context(row.name)).decode()

    def oauth2_client(self, provider_name: str) -> OAuth2Client:
        row = self.store.read(lambda conn: rows.get_oauth2(conn, provider_name))
        if row is None:
            raise NotFoundError(f"OAuth2 credential provider {provider_name} not found")
        secret = ""
        if row.client_secret_sealed is not None:
            secret = self.vault.open(row.client_secret_sealed, client_secret_context(row.name)).decode()
        resolved = row.config.get("resolved") or {}
        discovery = row.config.get("oauthDiscovery") or {}
        return OAuth2Client(
            provider_name=row.name,
            provider_arn=self.where.oauth2_arn(row.name),
            vendor=row.vendor,
            client_id=row.config.get("clientId", ""),
            client_secret=secret,
            token_endpoint=resolved.get("tokenEndpoint", ""),
            authorization_endpoint=resolved.get("authorizationEndpoint"),
            issuer=resolved.get("issuer"),
            discovery_url=discovery.get("discoveryUrl"),
            callback_url=self.where.callback_url(row.name),
            token_endpoint_auth_methods=tuple(resolved.get("tokenEndpointAuthMethods") or ()),
            client_authentication=row.config.get("clientAuthenticationMethod"),
            on_behalf_of=row.config.get("onBehalfOfTokenExchangeConfig"),
        )
