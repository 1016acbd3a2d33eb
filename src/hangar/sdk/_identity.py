"""Outbound identity decorators: hand an agent function an API key, an OAuth2 access token or its workload token.

Same names, parameters and behaviour as ``bedrock_agentcore.identity.auth`` (bedrock-agentcore 1.25.0), so an
agent moves between the SDKs by changing an import. The workload access token (WAT) comes from the request the
runtime sent (``BedrockAgentCoreContext``); on a developer's machine, where no runtime sends one, a workload
identity and a user id are created once and remembered in ``.agentcore.json``, as the reference SDK does.
Nothing here talks to the network at import or decoration; every call is made when the decorated function runs.
"""

from __future__ import annotations

import abc
import asyncio
import contextvars
import functools
import inspect
import json
import logging
import os
import threading
import time
import uuid
from collections.abc import Awaitable, Callable, Coroutine
from pathlib import Path
from typing import Any, Literal, TypeVar, cast

from ._context import BedrockAgentCoreContext
from ._identity_client import call
from ._server import SANDBOX_MARKER_ENV

__all__ = [
    "POLLING_INTERVAL_SECONDS",
    "POLLING_TIMEOUT_SECONDS",
    "TokenPoller",
    "requires_access_token",
    "requires_api_key",
    "requires_wat",
]

# How USER_FEDERATION waits for the user's consent: the reference's 5 s / 600 s (changed only by tests).
POLLING_INTERVAL_SECONDS: float = 5
POLLING_TIMEOUT_SECONDS: float = 600
LOCAL_CONFIG_FILE = ".agentcore.json"  # the reference SDK's file, so a developer keeps one identity across SDKs
USER_ID_HEADER = "X-Amzn-Bedrock-AgentCore-Runtime-User-Id"

AuthFlow = Literal["M2M", "USER_FEDERATION", "ON_BEHALF_OF_TOKEN_EXCHANGE"]
F = TypeVar("F", bound=Callable[..., Any])
T = TypeVar("T")

logger = logging.getLogger("hangar.sdk.identity")


class TokenPoller(abc.ABC):
    """Waits for a USER_FEDERATION token after the user was sent to the authorization URL; pass your own as
    ``token_poller`` to wait differently (any object with an async ``poll_for_token`` works, the reference's too)."""

    @abc.abstractmethod
    async def poll_for_token(self) -> str: ...


class _IntervalPoller(TokenPoller):
    """Asks again every ``POLLING_INTERVAL_SECONDS`` until a token comes or ``POLLING_TIMEOUT_SECONDS`` pass."""

    def __init__(self, ask: Callable[[], str | None]) -> None:
        self._ask = ask

    async def poll_for_token(self) -> str:
        started = time.monotonic()
        while time.monotonic() - started < POLLING_TIMEOUT_SECONDS:
            await asyncio.sleep(POLLING_INTERVAL_SECONDS)
            token = await asyncio.to_thread(self._ask)
            if token is not None:
                return token
        raise asyncio.TimeoutError(  # noqa: UP041 - on Python 3.10 it is not the builtin TimeoutError
            f"no access token after {POLLING_TIMEOUT_SECONDS} s of polling: the user has not completed authorization"
        )


# -- the decorators ------------------------------------------------------------------------------------------


def requires_api_key(*, provider_name: str, into: str = "api_key") -> Callable[[F], F]:
    """Call the function with the API key stored in credential provider ``provider_name`` as keyword ``into``."""

    def fetch() -> str:
        answer = call(
            "GetResourceApiKey",
            {"resourceCredentialProviderName": provider_name, "workloadIdentityToken": _workload_access_token()},
        )
        key: str = answer["apiKey"]
        return key

    def decorator(func: F) -> F:
        return _inject(func, into, sync_fetch=fetch, async_fetch=lambda: asyncio.to_thread(fetch))

    return decorator


def requires_access_token(
    *,
    provider_name: str,
    into: str = "access_token",
    scopes: list[str],
    resources: list[str] | None = None,
    audiences: list[str] | None = None,
    on_auth_url: Callable[[str], Any] | None = None,
    auth_flow: AuthFlow,
    callback_url: str | None = None,
    force_authentication: bool = False,
    token_poller: Any | None = None,
    custom_state: str | None = None,
    custom_parameters: dict[str, str] | None = None,
) -> Callable[[F], F]:
    """Call the function with an OAuth2 access token from provider ``provider_name`` as keyword ``into``.

    ``M2M`` gets a client-credentials token. ``USER_FEDERATION`` may first answer with an authorization URL: it is
    handed to ``on_auth_url`` (sync or async) for the user to open, then the service is polled (``token_poller``,
    else every ``POLLING_INTERVAL_SECONDS`` for up to ``POLLING_TIMEOUT_SECONDS``) until the user has consented.
    """

    async def fetch() -> str:
        wat = await asyncio.to_thread(_workload_access_token)
        request: dict[str, Any] = {
            "resourceCredentialProviderName": provider_name,
            "scopes": scopes,
            "oauth2Flow": auth_flow,
            "workloadIdentityToken": wat,
        }
        optional = {
            "resources": resources,
            "audiences": audiences,
            "resourceOauth2ReturnUrl": callback_url or BedrockAgentCoreContext.get_oauth2_callback_url(),
            "forceAuthentication": force_authentication,
            "customState": custom_state,
            "customParameters": custom_parameters,
        }
        request.update({name: value for name, value in optional.items() if value})
        answer = await asyncio.to_thread(call, "GetResourceOauth2Token", request)
        if "accessToken" in answer:
            token: str = answer["accessToken"]
            return token
        if "authorizationUrl" not in answer:
            raise RuntimeError("the identity service answered with neither an access token nor an authorization URL")
        url = answer["authorizationUrl"]
        if on_auth_url is not None:
            shown = on_auth_url(url)
            if inspect.isawaitable(shown):
                await shown
        if force_authentication:
            request["forceAuthentication"] = False  # only the first call forces a new consent
        if "sessionUri" in answer:
            request["sessionUri"] = answer["sessionUri"]
        poller = token_poller or _IntervalPoller(lambda: call("GetResourceOauth2Token", request).get("accessToken"))
        return await poller.poll_for_token()

    def decorator(func: F) -> F:
        return _inject(func, into, sync_fetch=lambda: _run_coroutine(fetch()), async_fetch=fetch)

    return decorator


def requires_wat(*, into: str = "identity_wat") -> Callable[[F], F]:
    """Call the function with the workload access token the runtime sent with this request, as keyword ``into``."""

    def fetch() -> str:
        token = BedrockAgentCoreContext.get_workload_access_token()
        if not token:
            raise ValueError(
                "No workload access token in this request's context: requires_wat works only while handling a "
                "request from the runtime (it sends the WorkloadAccessToken header)"
            )
        return token

    async def afetch() -> str:
        return fetch()

    def decorator(func: F) -> F:
        return _inject(func, into, sync_fetch=fetch, async_fetch=afetch)

    return decorator


def _inject(func: F, into: str, *, sync_fetch: Callable[[], str], async_fetch: Callable[[], Awaitable[str]]) -> F:
    """Wrap ``func`` (sync or ``async def``) so each call first fetches the value and passes it as ``into``."""
    if inspect.iscoroutinefunction(func):

        @functools.wraps(func)
        async def async_wrapper(*args: Any, **kwargs: Any) -> Any:
            kwargs[into] = await async_fetch()
            return await func(*args, **kwargs)

        return cast(F, async_wrapper)  # functools.wraps keeps the signature F, which mypy cannot see

    @functools.wraps(func)
    def sync_wrapper(*args: Any, **kwargs: Any) -> Any:
        kwargs[into] = sync_fetch()
        return func(*args, **kwargs)

    return cast(F, sync_wrapper)


def _run_coroutine(coroutine: Coroutine[Any, Any, T]) -> T:
    """Run to completion from sync code: in place, or on a helper thread when this thread already runs a loop
    (``asyncio.run`` refuses to nest); the context variables (the request's WAT) travel along."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(coroutine)
    context = contextvars.copy_context()
    values: list[T] = []
    errors: list[BaseException] = []

    def run() -> None:
        try:
            values.append(context.run(asyncio.run, coroutine))
        except BaseException as exc:  # handed back to the caller's thread below
            errors.append(exc)

    helper = threading.Thread(target=run, name="hangar-identity-call")
    helper.start()
    helper.join()
    if errors:
        raise errors[0]
    return values[0]


# -- where the workload access token comes from --------------------------------------------------------------


def _workload_access_token() -> str:
    """The request's WAT; in a runtime without one, a clear error; on a developer's machine, a local identity."""
    token = BedrockAgentCoreContext.get_workload_access_token()
    if token is not None:
        return token
    if os.environ.get(SANDBOX_MARKER_ENV, "") not in ("", "0"):
        raise ValueError(
            "No workload access token in this request: Hangar sends one in the WorkloadAccessToken header with every "
            "invocation, so this code runs outside a request (a thread or task that did not copy the request's "
            f"context?) or the caller of a SigV4-authenticated invocation sent no {USER_ID_HEADER} header"
        )
    if os.environ.get("DOCKER_CONTAINER") == "1":
        raise ValueError(
            "No workload access token in this request. For an invocation authenticated with SigV4, send the "
            f"{USER_ID_HEADER} header and retry"
        )
    return _local_development_token()


def _local_development_token() -> str:
    """Create (once) a workload identity and a user id, remember them in ``.agentcore.json``, mint a WAT for them."""
    path = Path(LOCAL_CONFIG_FILE)
    config: dict[str, Any] = {}
    if path.exists():
        try:
            loaded = json.loads(path.read_text(encoding="utf-8"))
            config = loaded if isinstance(loaded, dict) else {}
        except (OSError, ValueError):
            logger.warning("could not read %s; creating a new local workload identity", path.absolute())
    workload = config.get("workload_identity_name")
    if not workload:
        name = f"workload-{uuid.uuid4().hex[:8]}"
        created = call("CreateWorkloadIdentity", {"name": name, "allowedResourceOauth2ReturnUrls": []})
        workload = created["name"]
        logger.info("created local workload identity %s", workload)
    user_id = config.get("user_id") or uuid.uuid4().hex[:8]
    try:
        path.write_text(json.dumps({"workload_identity_name": workload, "user_id": user_id}, indent=2), "utf-8")
    except OSError:
        logger.warning("could not write %s; the next run creates another workload identity", path.absolute())
    answer = call("GetWorkloadAccessTokenForUserId", {"workloadName": workload, "userId": user_id})
    token: str = answer["workloadAccessToken"]
    return token
