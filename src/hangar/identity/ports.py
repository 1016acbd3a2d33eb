"""The seam between the identity control plane (providers, workload identities, vault) and the data plane (workload
access tokens, resource tokens): plain values and the few look-ups the data plane needs.

The control side implements ``Directory`` and ``SecretBox``; the data side only reads through them, so neither
knows the other's tables.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol


@dataclass(frozen=True)
class WorkloadIdentity:
    name: str
    arn: str
    allowed_return_urls: tuple[str, ...] = ()


@dataclass(frozen=True)
class OAuth2Client:
    """One OAuth2 credential provider, resolved to endpoints and with its client secret decrypted (never logged)."""

    provider_name: str
    provider_arn: str
    vendor: str  # CustomOauth2, GithubOauth2, ...
    client_id: str
    client_secret: str = field(repr=False)
    token_endpoint: str
    authorization_endpoint: str | None = None
    issuer: str | None = None
    discovery_url: str | None = None
    callback_url: str = ""  # Hangar's redirect URI for this provider (what AgentCore reports as callbackUrl)
    token_endpoint_auth_methods: tuple[str, ...] = ("client_secret_basic", "client_secret_post")
    # The provider's clientAuthenticationMethod (CLIENT_SECRET_BASIC | CLIENT_SECRET_POST), when it set one.
    client_authentication: str | None = None
    # The provider's onBehalfOfTokenExchangeConfig document, as given (grantType, actor token, client auth).
    on_behalf_of: dict[str, Any] | None = field(default=None, compare=False)


class Directory(Protocol):
    """Read-only look-ups by name; each raises ``hangar.domain.errors.NotFoundError`` (ResourceNotFoundException)."""

    def workload(self, name: str) -> WorkloadIdentity: ...

    def api_key(self, provider_name: str) -> str: ...

    def oauth2_client(self, provider_name: str) -> OAuth2Client: ...


class SecretBox(Protocol):
    """Authenticated encryption with the vault's current key; ``context`` binds a ciphertext to its row/purpose
    (a ciphertext moved to another row fails to decrypt)."""

    def seal(self, plaintext: bytes, context: str) -> bytes: ...

    def open(self, sealed: bytes, context: str) -> bytes: ...
