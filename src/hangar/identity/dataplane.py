"""Identity data-plane use cases: workload access tokens, API keys, and OAuth2 tokens (M2M, USER_FEDERATION,
ON_BEHALF_OF_TOKEN_EXCHANGE) with a sealed token cache.

Who may do what is decided here, so the main port (admins, SigV4) and each sandbox's identity channel (a session,
``Principal(kind="session")``) share one rule set: a session acts only for its own workload identity, may not mint
workload access tokens for arbitrary users (GetWorkloadAccessToken/ForUserId), and presents WATs of its own
workload only.

USER_FEDERATION: the first call hands out an authorization URL (PKCE S256, a random ``state`` whose sha256 alone is
stored) and a ``sessionUri``; the IdP sends the browser to Hangar's callback, which exchanges the code (tokens kept
sealed on the session) and redirects to the caller's return URL; CompleteResourceTokenAuth binds them to the user
that started the flow (anyone else is refused) and moves them into the cache, where the next call finds them.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import secrets
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import urlencode, urlsplit, urlunsplit

import anyio.to_thread

from hangar.domain.errors import AccessDeniedError, HangarError, NotFoundError, ValidationError
from hangar.domain.types import Principal
from hangar.domain.validation import Checker
from hangar.identity import data_requests as shapes
from hangar.identity.oauth import IdpError, OAuthClient, Pkce, TokenSet
from hangar.identity.ports import Directory, OAuth2Client, SecretBox, WorkloadIdentity
from hangar.identity.tokens import WatClaims, WorkloadTokens
from hangar.store.identity_tokens import (
    AUTHORIZED,
    COMPLETED,
    FAILED,
    PENDING,
    CachedToken,
    IdentityTokenStore,
    OAuthSession,
    TokenKey,
)

SESSION_TTL_S = 600  # an authorization URL must be used within 10 minutes
REFRESH_MARGIN_S = 60.0  # refresh this long before expiry (or a tenth of the token's lifetime, if shorter)
SESSION_URI_PREFIX = "urn:ietf:params:oauth:request_uri:"

# (workload, user JWT, caller is an admin) -> the JWT's subject; raises Unauthorized/AccessDenied.
UserJwtVerifier = Callable[[str, str, bool], Awaitable[str]]


class IdentityDataPlane:
    def __init__(
        self,
        tokens: WorkloadTokens,
        directory: Directory,
        box: SecretBox,
        store: IdentityTokenStore,
        oauth: OAuthClient,
        verify_user_jwt: UserJwtVerifier,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.tokens = tokens
        self.directory = directory
        self.box = box
        self.store = store
        self.oauth = oauth
        self._verify_user_jwt = verify_user_jwt
        self._clock = clock
        self._locks: dict[TokenKey, anyio.Lock] = {}

    async def start(self) -> None:
        """Nothing runs in the background: tokens are fetched and refreshed on demand."""

    async def stop(self) -> None:
        await self.oauth.stop()

    # -- workload access tokens -----------------------------------------------------------------------------

    async def get_workload_access_token(self, principal: Principal, body: dict[str, Any]) -> dict[str, Any]:
        check = Checker()
        name = shapes.workload_name(body, check)
        check.raise_if_any()
        assert name is not None
        _admin_only(principal, "GetWorkloadAccessToken")
        await self._workload(name)
        return {"workloadAccessToken": self.tokens.mint(name, None)}

    async def get_workload_access_token_for_user_id(self, principal: Principal, body: dict[str, Any]) -> dict[str, Any]:
        check = Checker()
        name = shapes.workload_name(body, check)
        user = shapes.user_id(check.required(body, "userId", "userId"), "userId", check)
        check.raise_if_any()
        assert name is not None and user is not None
        _admin_only(principal, "GetWorkloadAccessTokenForUserId")
        await self._workload(name)
        return {"workloadAccessToken": self.tokens.mint(name, user)}

    async def get_workload_access_token_for_jwt(self, principal: Principal, body: dict[str, Any]) -> dict[str, Any]:
        check = Checker()
        name = shapes.workload_name(body, check)
        token = shapes.user_token(check.required(body, "userToken", "userToken"), "userToken", check)
        check.raise_if_any()
        assert name is not None and token is not None
        _own_workload(principal, name)
        await self._workload(name)
        subject = await self._verify_user_jwt(name, token, principal.kind == "sigv4")
        return {"workloadAccessToken": self.tokens.mint(name, subject, user_token=token)}

    # -- API keys -------------------------------------------------------------------------------------------

    async def get_resource_api_key(self, principal: Principal, body: dict[str, Any]) -> dict[str, Any]:
        check = Checker()
        token, provider = shapes.resource_ref(body, check)
        check.raise_if_any()
        assert token is not None and provider is not None
        await self._claims(principal, token)
        key = await anyio.to_thread.run_sync(self.directory.api_key, provider)
        return {"apiKey": key}

    # -- OAuth2 ---------------------------------------------------------------------------------------------

    async def get_resource_oauth2_token(self, principal: Principal, body: dict[str, Any]) -> dict[str, Any]:
        request = shapes.oauth2_token_request(body)
        claims = await self._claims(principal, request.workload_token)
        client = await anyio.to_thread.run_sync(self.directory.oauth2_client, request.provider)
        if request.flow == "M2M":
            return await self._m2m(claims, client, request)
        if claims.user_id is None:
            raise ValidationError(
                f"{request.flow} needs a workload access token bound to a user "
                "(GetWorkloadAccessTokenForJWT or GetWorkloadAccessTokenForUserId)"
            )
        if request.flow == "ON_BEHALF_OF_TOKEN_EXCHANGE":
            return await self._on_behalf_of(claims, client, request)
        return await self._user_federation(claims, client, request)

    async def _m2m(self, claims: WatClaims, client: OAuth2Client, request: shapes.Oauth2TokenRequest) -> dict[str, Any]:
        key = _key(
            claims.workload, "", client.provider_name, "M2M", request.scopes, request.audiences, request.resources
        )

        async def fetch() -> TokenSet:
            return await self.oauth.client_credentials(
                client,
                request.scopes,
                audiences=request.audiences,
                resources=request.resources,
                extra=request.custom_parameters,
            )

        return {"accessToken": await self._cached_or_fetched(key, client, request, fetch)}

    async def _on_behalf_of(
        self, claims: WatClaims, client: OAuth2Client, request: shapes.Oauth2TokenRequest
    ) -> dict[str, Any]:
        subject_token = self.tokens.user_token(claims)
        if subject_token is None:
            raise ValidationError(
                "ON_BEHALF_OF_TOKEN_EXCHANGE needs a workload access token minted for the user's JWT "
                "(GetWorkloadAccessTokenForJWT or a JWT-authorized invocation)"
            )
        key = _key(
            claims.workload,
            claims.user_id or "",
            client.provider_name,
            "OBO",
            request.scopes,
            request.audiences,
            request.resources,
        )

        async def fetch() -> TokenSet:
            return await self.oauth.token_exchange(
                client, subject_token, request.scopes, audiences=request.audiences, resources=request.resources
            )

        return {"accessToken": await self._cached_or_fetched(key, client, request, fetch)}

    async def _cached_or_fetched(
        self,
        key: TokenKey,
        client: OAuth2Client,
        request: shapes.Oauth2TokenRequest,
        fetch: Callable[[], Awaitable[TokenSet]],
    ) -> str:
        async with self._lock(key):
            if not request.force:
                found = await self._usable_token(key, client, request.scopes)
                if found is not None:
                    return found
            fresh = await fetch()
            await self._store_token(key, request.scopes, fresh)
            return fresh.access_token

    async def _user_federation(
        self, claims: WatClaims, client: OAuth2Client, request: shapes.Oauth2TokenRequest
    ) -> dict[str, Any]:
        user = claims.user_id or ""
        if request.session_uri is not None:
            session = await self._session(request.session_uri)
            if (session.workload, session.user_id, session.provider) != (claims.workload, user, client.provider_name):
                raise AccessDeniedError("The session was started by another workload, user or provider")
            if session.status == COMPLETED:
                key = _key(claims.workload, user, client.provider_name, "USER_FEDERATION", session.scopes)
                found = await self._usable_token(key, client, session.scopes)
                if found is not None:
                    return {"accessToken": found}
            elif session.status == FAILED or session.expires_at.timestamp() < self._clock():
                return {"sessionUri": request.session_uri, "sessionStatus": "FAILED"}
            else:
                return {"sessionUri": request.session_uri, "sessionStatus": "IN_PROGRESS"}
        key = _key(claims.workload, user, client.provider_name, "USER_FEDERATION", request.scopes)
        if not request.force:
            async with self._lock(key):
                found = await self._usable_token(key, client, request.scopes)
            if found is not None:
                return {"accessToken": found}
        return await self._start_session(claims, client, request)

    async def _start_session(
        self, claims: WatClaims, client: OAuth2Client, request: shapes.Oauth2TokenRequest
    ) -> dict[str, Any]:
        workload = await self._workload(claims.workload)
        if request.return_url is not None:
            if workload.allowed_return_urls and request.return_url not in workload.allowed_return_urls:
                raise ValidationError(
                    "resourceOauth2ReturnUrl is not one of the workload identity's allowedResourceOauth2ReturnUrls"
                )
            if urlsplit(request.return_url).scheme not in ("http", "https"):
                raise ValidationError("resourceOauth2ReturnUrl must be an http(s) URL")
        endpoints = await self.oauth.endpoints(client)
        state = secrets.token_urlsafe(32)
        pkce = Pkce.new()
        session_id = secrets.token_urlsafe(24)
        pending = OAuthSession(
            session_id=session_id,
            state_hash=_sha256(state),
            workload=claims.workload,
            user_id=claims.user_id or "",
            provider=client.provider_name,
            scopes=list(request.scopes),
            verifier_sealed=b"",
            return_url=request.return_url,
            custom_state_sealed=None,
            status=PENDING,
            expires_at=datetime.now(UTC) + timedelta(seconds=SESSION_TTL_S),
        )
        custom_state = request.custom_state

        def sealed() -> OAuthSession:
            return dataclasses.replace(
                pending,
                verifier_sealed=self.box.seal(pkce.verifier.encode(), pending.context("verifier")),
                custom_state_sealed=(
                    self.box.seal(custom_state.encode(), pending.context("custom-state"))
                    if custom_state is not None
                    else None
                ),
            )

        url = self.oauth.authorization_url(
            client, endpoints, request.scopes, state, pkce, extra=request.custom_parameters, force=request.force
        )
        await anyio.to_thread.run_sync(self.store.create_session, sealed)
        return {"authorizationUrl": url, "sessionUri": SESSION_URI_PREFIX + session_id, "sessionStatus": "IN_PROGRESS"}

    async def oauth2_callback(self, query: dict[str, str], provider: str | None = None) -> str | None:
        """The IdP's redirect: check ``state`` strictly, exchange the code; returns where to send the browser
        (the caller's return URL with ``session_id`` and its ``state``), or None when it gave no return URL.
        ``provider`` is the last segment of the callback URL, when it has one: it must be the session's."""
        state = query.get("state")
        if not state or len(state) > 512:
            raise ValidationError("The authorization callback carries no state")
        session = await anyio.to_thread.run_sync(self.store.session_by_state, _sha256(state))
        if session is None:
            raise ValidationError("The authorization callback's state is unknown, used or was tampered with")
        if provider is not None and provider != session.provider:
            raise ValidationError("The authorization callback's state belongs to another credential provider")
        if session.status != PENDING:
            raise ValidationError("The authorization session was already used")
        if session.expires_at.timestamp() < self._clock():
            await anyio.to_thread.run_sync(self.store.fail, session.session_id)
            raise ValidationError("The authorization session has expired; start again")
        error = query.get("error")
        code = query.get("code")
        if error is not None or not code:
            await anyio.to_thread.run_sync(self.store.fail, session.session_id)
            reason = error if error and error.isprintable() and len(error) <= 64 else "no authorization code"
            raise ValidationError(f"The identity provider did not authorize the request: {reason}")
        client = await anyio.to_thread.run_sync(self.directory.oauth2_client, session.provider)
        verifier = self.box.open(session.verifier_sealed, session.context("verifier")).decode()
        try:
            tokens = await self.oauth.exchange_code(client, code, verifier)
        except IdpError:
            await anyio.to_thread.run_sync(self.store.fail, session.session_id)
            raise

        def seal_tokens() -> tuple[bytes, bytes | None]:
            access = self.box.seal(tokens.access_token.encode(), session.context("access"))
            refresh = tokens.refresh_token
            return access, self.box.seal(refresh.encode(), session.context("refresh")) if refresh else None

        authorized = await anyio.to_thread.run_sync(
            self.store.authorize, session.session_id, seal_tokens, _as_datetime(tokens.expires_at)
        )
        if not authorized:
            raise ValidationError("The authorization session was already used")
        if session.return_url is None:
            return None
        params = {"session_id": SESSION_URI_PREFIX + session.session_id}
        if session.custom_state_sealed is not None:
            params["state"] = self.box.open(session.custom_state_sealed, session.context("custom-state")).decode()
        return _with_query(session.return_url, params)

    async def complete_resource_token_auth(self, principal: Principal, body: dict[str, Any]) -> dict[str, Any]:
        check = Checker()
        session_uri = check.string(
            check.required(body, "sessionUri", "sessionUri"),
            "sessionUri",
            min_len=1,
            max_len=1024,
            pattern=shapes.SESSION_URI,
        )
        identifier = check.struct(check.required(body, "userIdentifier", "userIdentifier"), "userIdentifier")
        user_token = user_id = None
        if identifier:
            member = check.union(identifier, "userIdentifier", ("userToken", "userId"))
            if member == "userToken":
                user_token = shapes.user_token(identifier["userToken"], "userIdentifier.userToken", check)
            elif member == "userId":
                user_id = shapes.user_id(identifier["userId"], "userIdentifier.userId", check)
        check.raise_if_any()
        assert session_uri is not None
        session = await self._session(session_uri)
        _own_workload(principal, session.workload)
        if user_token is not None:
            user_id = await self._verify_user_jwt(session.workload, user_token, principal.kind == "sigv4")
        if user_id != session.user_id:
            raise AccessDeniedError("The authorization session belongs to another user")
        if session.status == COMPLETED:
            return {}
        if session.expires_at.timestamp() < self._clock():
            raise ValidationError("The authorization session has expired; start again")
        if session.status != AUTHORIZED:
            raise ValidationError(
                f"The authorization session is {'FAILED' if session.status == FAILED else 'not authorized yet'}"
            )
        key = _key(session.workload, session.user_id, session.provider, "USER_FEDERATION", session.scopes)
        access_sealed, refresh_sealed = session.access_token_sealed, session.refresh_token_sealed
        assert access_sealed is not None

        def moved() -> CachedToken:
            access = self.box.open(access_sealed, session.context("access"))
            refresh = self.box.open(refresh_sealed, session.context("refresh")) if refresh_sealed is not None else None
            return CachedToken(
                key=key,
                scopes=session.scopes,
                access_token_sealed=self.box.seal(access, key.context("access")),
                refresh_token_sealed=self.box.seal(refresh, key.context("refresh")) if refresh is not None else None,
                expires_at=session.token_expires_at,
            )

        if not await anyio.to_thread.run_sync(self.store.complete, session.session_id, moved):
            raise ValidationError("The authorization session was completed concurrently")
        return {}

    # -- cache ----------------------------------------------------------------------------------------------

    async def _usable_token(self, key: TokenKey, client: OAuth2Client, scopes: list[str]) -> str | None:
        """A cached token that stays valid past the refresh margin, refreshing it first when it would not."""
        cached = await anyio.to_thread.run_sync(self.store.token, key)
        if cached is None:
            return None
        now = self._clock()
        try:
            access = self.box.open(cached.access_token_sealed, key.context("access")).decode()
        except HangarError:  # unreadable (a retired key, an edited row): a miss, never someone else's token
            await anyio.to_thread.run_sync(self.store.drop_token, key)
            return None
        if cached.expires_at is None:
            return access
        expires = cached.expires_at.timestamp()
        if expires - now > _margin(cached):
            return access
        if cached.refresh_token_sealed is not None:
            try:
                refresh = self.box.open(cached.refresh_token_sealed, key.context("refresh")).decode()
            except HangarError:
                await anyio.to_thread.run_sync(self.store.drop_token, key)
                return None
            try:
                fresh = await self.oauth.refresh(client, refresh, scopes)
            except IdpError as exc:
                if exc.oauth_error is None and expires > now:
                    return access  # the IdP is unreachable but the token is still valid: use it
                await anyio.to_thread.run_sync(self.store.drop_token, key)
                return None
            await self._store_token(key, cached.scopes, fresh)
            return fresh.access_token
        if expires > now and key.flow == "USER_FEDERATION":
            return access  # no refresh token: the user's token is usable until it actually expires
        return None

    async def _store_token(self, key: TokenKey, scopes: list[str], tokens: TokenSet) -> None:
        def sealed() -> CachedToken:
            refresh = tokens.refresh_token
            return CachedToken(
                key=key,
                scopes=list(scopes),
                access_token_sealed=self.box.seal(tokens.access_token.encode(), key.context("access")),
                refresh_token_sealed=self.box.seal(refresh.encode(), key.context("refresh")) if refresh else None,
                expires_at=_as_datetime(tokens.expires_at),
            )

        await anyio.to_thread.run_sync(self.store.put_token, sealed)

    def _lock(self, key: TokenKey) -> anyio.Lock:
        if len(self._locks) > 10000:
            self._locks = {k: v for k, v in self._locks.items() if v.locked()}
        return self._locks.setdefault(key, anyio.Lock())

    # -- look-ups -------------------------------------------------------------------------------------------

    async def _claims(self, principal: Principal, token: str) -> WatClaims:
        claims = self.tokens.verify(token)
        if principal.kind != "sigv4" and claims.workload != principal.workload:
            raise AccessDeniedError("The workload access token belongs to another workload identity")
        await self._workload(claims.workload)
        return claims

    async def _workload(self, name: str) -> WorkloadIdentity:
        return await anyio.to_thread.run_sync(self.directory.workload, name)

    async def _session(self, session_uri: str) -> OAuthSession:
        session_id = session_uri.removeprefix(SESSION_URI_PREFIX)
        session = await anyio.to_thread.run_sync(self.store.session, session_id)
        if session is None:
            raise NotFoundError("No authorization session with that sessionUri")
        return session


def _admin_only(principal: Principal, operation: str) -> None:
    if principal.kind != "sigv4":
        raise AccessDeniedError(f"{operation} is not allowed from a session")


def _own_workload(principal: Principal, workload: str) -> None:
    if principal.kind == "sigv4":
        return
    if principal.kind != "session" or principal.workload != workload:
        raise AccessDeniedError("A session may act only for its own workload identity")


def _key(
    workload: str,
    user: str,
    provider: str,
    flow: str,
    scopes: list[str],
    audiences: list[str] | None = None,
    resources: list[str] | None = None,
) -> TokenKey:
    material = json.dumps([sorted(set(scopes)), sorted(set(audiences or [])), sorted(set(resources or []))])
    return TokenKey(workload, user, provider, flow, _sha256(material))


def _margin(cached: CachedToken) -> float:
    return REFRESH_MARGIN_S if cached.expires_at is None else min(REFRESH_MARGIN_S, _lifetime(cached) / 10)


def _lifetime(cached: CachedToken) -> float:
    if cached.expires_at is None or cached.issued_at is None:
        return REFRESH_MARGIN_S * 10
    return max(0.0, cached.expires_at.timestamp() - cached.issued_at.timestamp())


def _sha256(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def _as_datetime(epoch: float | None) -> datetime | None:
    return datetime.fromtimestamp(epoch, UTC) if epoch is not None else None


def _with_query(url: str, params: dict[str, str]) -> str:
    parts = urlsplit(url)
    query = f"{parts.query}&{urlencode(params)}" if parts.query else urlencode(params)
    return urlunsplit((parts.scheme, parts.netloc, parts.path, query, parts.fragment))
