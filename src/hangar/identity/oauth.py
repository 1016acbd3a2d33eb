"""The OAuth2 client side, on httpx: metadata discovery, client credentials, authorization code + PKCE, refresh,
and RFC 8693 token exchange.

Every request to an IdP has a connect/read timeout and an overall deadline, answers are size-capped and parsed
strictly; whatever goes wrong (refused connection, timeout, HTTP error, HTML where JSON was due, a JSON object
without ``access_token``) becomes an ``IdpError``, a ``ValidationException`` that names the provider and the
reason, never a hang and never an unhandled exception. Client secrets and tokens never reach a log line or an
error message.
"""

from __future__ import annotations

import base64
import hashlib
import json
import logging
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote, urlencode, urlsplit

import anyio
import httpx

from hangar.domain.errors import ValidationError
from hangar.identity.ports import OAuth2Client

log = logging.getLogger("hangar.identity")

TIMEOUT = httpx.Timeout(10.0, connect=3.0)
DEADLINE_S = 15.0  # whole exchange with the IdP, however slowly it drips bytes
MAX_ANSWER_BYTES = 256 * 1024
DISCOVERY_TTL_S = 900.0
TOKEN_EXCHANGE_GRANT = "urn:ietf:params:oauth:grant-type:token-exchange"
ACCESS_TOKEN_TYPE = "urn:ietf:params:oauth:token-type:access_token"
JWT_BEARER_GRANT = "urn:ietf:params:oauth:grant-type:jwt-bearer"


class IdpError(ValidationError):
    """The provider's IdP could not be used; ``oauth_error`` is its RFC 6749 error code when it sent one."""

    def __init__(self, provider: str, reason: str, oauth_error: str | None = None) -> None:
        super().__init__(f"The identity provider of credential provider {provider!r} failed: {reason}")
        self.oauth_error = oauth_error


@dataclass(frozen=True)
class TokenSet:
    """An IdP's token response, checked."""

    access_token: str = field(repr=False)
    refresh_token: str | None = field(default=None, repr=False)
    expires_at: float | None = None  # epoch seconds; None when the IdP did not say
    scope: str | None = None


@dataclass(frozen=True)
class Endpoints:
    token: str
    authorization: str | None
    issuer: str | None


@dataclass(frozen=True)
class Pkce:
    verifier: str = field(repr=False)

    @classmethod
    def new(cls) -> Pkce:
        return cls(secrets.token_urlsafe(64))

    @property
    def challenge(self) -> str:
        digest = hashlib.sha256(self.verifier.encode("ascii")).digest()
        return base64.urlsafe_b64encode(digest).rstrip(b"=").decode("ascii")


class OAuthClient:
    """One per server: a pooled httpx client and the discovery cache."""

    def __init__(
        self, clock: Callable[[], float] = time.time, deadline_s: float = DEADLINE_S, timeout: httpx.Timeout = TIMEOUT
    ) -> None:
        self._clock = clock
        self._deadline_s = deadline_s
        self._timeout = timeout
        self._http: httpx.AsyncClient | None = None
        self._discovered: dict[str, tuple[float, Endpoints]] = {}

    def _client(self) -> httpx.AsyncClient:
        if self._http is None:
            self._http = httpx.AsyncClient(timeout=self._timeout, follow_redirects=False, trust_env=False)
        return self._http

    async def stop(self) -> None:
        if self._http is not None:
            await self._http.aclose()
            self._http = None

    # -- endpoints ------------------------------------------------------------------------------------------

    async def endpoints(self, client: OAuth2Client) -> Endpoints:
        """The provider's endpoints: configured ones, else from its discovery document (cached)."""
        if client.token_endpoint and (client.authorization_endpoint or not client.discovery_url):
            return Endpoints(client.token_endpoint, client.authorization_endpoint, client.issuer)
        if not client.discovery_url:
            raise IdpError(client.provider_name, "it has neither a token endpoint nor a discovery URL")
        cached = self._discovered.get(client.discovery_url)
        if cached is not None and self._clock() - cached[0] < DISCOVERY_TTL_S:
            return cached[1]
        document = await self._request(client.provider_name, "GET", client.discovery_url)
        token = document.get("token_endpoint")
        authorization = document.get("authorization_endpoint")
        issuer = document.get("issuer")
        if not _is_http_url(token):
            raise IdpError(client.provider_name, "its discovery document has no usable token_endpoint")
        found = Endpoints(
            token=str(token),
            authorization=str(authorization) if _is_http_url(authorization) else None,
            issuer=issuer if isinstance(issuer, str) else None,
        )
        self._discovered[client.discovery_url] = (self._clock(), found)
        return found

    # -- grants ---------------------------------------------------------------------------------------------

    async def client_credentials(
        self,
        client: OAuth2Client,
        scopes: list[str],
        *,
        audiences: list[str] | None = None,
        resources: list[str] | None = None,
        extra: dict[str, str] | None = None,
    ) -> TokenSet:
        form: list[tuple[str, str]] = [("grant_type", "client_credentials")]
        form += _scope_and_targets(scopes, audiences, resources, extra)
        return await self._token(client, form)

    def authorization_url(
        self,
        client: OAuth2Client,
        endpoints: Endpoints,
        scopes: list[str],
        state: str,
        pkce: Pkce,
        *,
        extra: dict[str, str] | None = None,
        force: bool = False,
    ) -> str:
        """Where the user's browser goes to consent (authorization code flow with PKCE S256)."""
        if not endpoints.authorization:
            raise IdpError(client.provider_name, "it has no authorization endpoint (needed for USER_FEDERATION)")
        params: dict[str, str] = dict(extra or {})
        params.update(
            response_type="code",
            client_id=client.client_id,
            redirect_uri=client.callback_url,
            state=state,
            code_challenge=pkce.challenge,
            code_challenge_method="S256",
        )
        if scopes:
            params["scope"] = " ".join(scopes)
        if force:
            params.setdefault("prompt", "login")
        separator = "&" if urlsplit(endpoints.authorization).query else "?"
        return f"{endpoints.authorization}{separator}{urlencode(params, quote_via=quote)}"

    async def exchange_code(self, client: OAuth2Client, code: str, verifier: str) -> TokenSet:
        form = [
            ("grant_type", "authorization_code"),
            ("code", code),
            ("redirect_uri", client.callback_url),
            ("code_verifier", verifier),
        ]
        return await self._token(client, form)

    async def refresh(self, client: OAuth2Client, refresh_token: str, scopes: list[str]) -> TokenSet:
        form = [("grant_type", "refresh_token"), ("refresh_token", refresh_token)]
        if scopes:
            form.append(("scope", " ".join(scopes)))
        tokens = await self._token(client, form)
        if tokens.refresh_token is None:  # RFC 6749 §6: the IdP may keep the old refresh token valid
            tokens = TokenSet(tokens.access_token, refresh_token, tokens.expires_at, tokens.scope)
        return tokens

    async def token_exchange(
        self,
        client: OAuth2Client,
        subject_token: str,
        scopes: list[str],
        *,
        audiences: list[str] | None = None,
        resources: list[str] | None = None,
    ) -> TokenSet:
        """Trade the user's token for one the resource accepts, on the user's behalf, as the provider's
        ``onBehalfOfTokenExchangeConfig`` says: RFC 8693 token exchange (the default; with an M2M actor token when
        ``actorTokenContent`` is M2M) or an RFC 7523 JWT authorization grant; ``NO_CLIENT`` sends no client
        credentials."""
        config = client.on_behalf_of or {}
        grant = config.get("grantType", "TOKEN_EXCHANGE")
        if grant == "JWT_AUTHORIZATION_GRANT":
            form = [("grant_type", JWT_BEARER_GRANT), ("assertion", subject_token)]
        else:
            form = [
                ("grant_type", TOKEN_EXCHANGE_GRANT),
                ("subject_token", subject_token),
                ("subject_token_type", ACCESS_TOKEN_TYPE),
                ("requested_token_type", ACCESS_TOKEN_TYPE),
            ]
            actor = (config.get("tokenExchangeGrantTypeConfig") or {}).get("actorTokenContent", "NONE")
            if actor == "M2M":
                actor_scopes = list((config.get("tokenExchangeGrantTypeConfig") or {}).get("actorTokenScopes") or [])
                actor_token = await self.client_credentials(client, actor_scopes)
                form += [("actor_token", actor_token.access_token), ("actor_token_type", ACCESS_TOKEN_TYPE)]
            elif actor != "NONE":
                raise IdpError(client.provider_name, f"actorTokenContent {str(actor)[:32]} is not supported by Hangar")
        form += _scope_and_targets(scopes, audiences, resources, None)
        no_client = (config.get("onBehalfOfAuthenticationConfig") or {}).get(
            "clientAuthenticationMethod"
        ) == "NO_CLIENT"
        return await self._token(client, form, authenticate=not no_client)

    # -- transport ------------------------------------------------------------------------------------------

    async def _token(self, client: OAuth2Client, form: list[tuple[str, str]], *, authenticate: bool = True) -> TokenSet:
        endpoints = await self.endpoints(client)
        headers = {"Accept": "application/json"}
        if not authenticate:
            form = [*form, ("client_id", client.client_id)]
        elif _uses_basic(client):
            pair = f"{quote(client.client_id, safe='')}:{quote(client.client_secret, safe='')}"
            headers["Authorization"] = "Basic " + base64.b64encode(pair.encode()).decode()
        else:
            form = [*form, ("client_id", client.client_id), ("client_secret", client.client_secret)]
        try:
            document = await self._exchange(client.provider_name, "POST", endpoints.token, form=form, headers=headers)
            return _token_set(client.provider_name, document, self._clock())
        except IdpError as exc:
            log.warning("%s", exc.message)  # names the provider and endpoint; never a secret or a body
            raise

    async def _request(
        self,
        provider: str,
        method: str,
        url: str,
        *,
        form: list[tuple[str, str]] | None = None,
        headers: dict[str, str] | None = None,
    ) -> dict[str, Any]:
        try:
            return await self._exchange(provider, method, url, form=form, headers=headers)
        except IdpError as exc:
            log.warning("%s", exc.message)  # names the provider and endpoint; never a secret or a body
            raise

    async def _exchange(
        self,
        provider: str,
        method: str,
        url: str,
        *,
        form: list[tuple[str, str]] | None,
        headers: dict[str, str] | None,
    ) -> dict[str, Any]:
        if not _is_http_url(url):
            raise IdpError(provider, "its endpoint is not an http(s) URL")
        where = _where(url)
        try:
            with anyio.fail_after(self._deadline_s):
                request = self._client().build_request(
                    method,
                    url,
                    content=urlencode(form).encode() if form is not None else None,
                    headers={
                        **(headers or {"Accept": "application/json"}),
                        **({"Content-Type": "application/x-www-form-urlencoded"} if form is not None else {}),
                    },
                )
                response = await self._client().send(request, stream=True)
                try:
                    body = await _read_capped(response)
                finally:
                    await response.aclose()
        except TimeoutError:
            raise IdpError(provider, f"{where} did not answer within {self._deadline_s:g}s") from None
        except httpx.TimeoutException:
            raise IdpError(provider, f"{where} timed out") from None
        except httpx.HTTPError as exc:
            raise IdpError(provider, f"{where} is unreachable ({type(exc).__name__})") from None
        if body is None:
            raise IdpError(provider, f"{where} answered more than {MAX_ANSWER_BYTES} bytes")
        try:
            document = json.loads(body)
        except ValueError:
            document = None
        if response.status_code != 200:
            error = document.get("error") if isinstance(document, dict) else None
            if isinstance(error, str) and error.isprintable() and len(error) <= 64:
                raise IdpError(provider, f"{where} refused: {error} (HTTP {response.status_code})", error)
            raise IdpError(provider, f"{where} answered HTTP {response.status_code}")
        if not isinstance(document, dict):
            raise IdpError(provider, f"{where} answered something that is not a JSON object")
        return document


async def _read_capped(response: httpx.Response) -> bytes | None:
    declared = response.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > MAX_ANSWER_BYTES:
        return None
    body = bytearray()
    async for chunk in response.aiter_bytes():
        body += chunk
        if len(body) > MAX_ANSWER_BYTES:
            return None
    return bytes(body)


def _token_set(provider: str, document: dict[str, Any], now: float) -> TokenSet:
    access = document.get("access_token")
    if not isinstance(access, str) or not access or len(access) > 131072:
        raise IdpError(provider, "its token endpoint answered without a usable access_token")
    token_type = document.get("token_type")
    if token_type is not None and not isinstance(token_type, str):
        raise IdpError(provider, "its token endpoint answered a token_type that is not a string")
    refresh = document.get("refresh_token")
    expires_in = document.get("expires_in")
    if isinstance(expires_in, str) and expires_in.isdigit():
        expires_in = int(expires_in)
    if expires_in is not None and (not isinstance(expires_in, int) or isinstance(expires_in, bool) or expires_in < 0):
        raise IdpError(provider, "its token endpoint answered an expires_in that is not a number of seconds")
    scope = document.get("scope")
    return TokenSet(
        access_token=access,
        refresh_token=refresh if isinstance(refresh, str) and refresh else None,
        expires_at=now + expires_in if isinstance(expires_in, int) else None,
        scope=scope if isinstance(scope, str) else None,
    )


def _scope_and_targets(
    scopes: list[str], audiences: list[str] | None, resources: list[str] | None, extra: dict[str, str] | None
) -> list[tuple[str, str]]:
    reserved = {"grant_type", "scope", "audience", "resource", "client_id", "client_secret", "code", "refresh_token"}
    form: list[tuple[str, str]] = [(k, v) for k, v in (extra or {}).items() if k not in reserved]
    if scopes:
        form.append(("scope", " ".join(scopes)))
    form += [("audience", a) for a in audiences or []]
    form += [("resource", r) for r in resources or []]
    return form


def _uses_basic(client: OAuth2Client) -> bool:
    """HTTP Basic unless the provider asked for CLIENT_SECRET_POST, or its IdP only supports that."""
    if client.client_authentication is not None:
        return client.client_authentication != "CLIENT_SECRET_POST"
    methods = client.token_endpoint_auth_methods
    return "client_secret_basic" in methods or not methods


def _is_http_url(value: object) -> bool:
    return isinstance(value, str) and urlsplit(value).scheme in ("http", "https") and bool(urlsplit(value).netloc)


def _where(url: str) -> str:
    """The endpoint without its query (which may carry secrets), for error messages."""
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}{parts.path}"
