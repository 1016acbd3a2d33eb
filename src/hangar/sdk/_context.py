"""What a handler knows about the request it serves.

``RequestContext`` is handed to handlers that ask for it; ``BedrockAgentCoreContext`` exposes the same facts
through context variables, so code deep inside an agent (tools, identity helpers, log formatters) can reach them
without threading a parameter through every call.
"""

from __future__ import annotations

import uuid
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Any, Protocol

from starlette.requests import HTTPConnection

from ._headers import (
    IDENTITY_WAT_HEADER,
    OAUTH2_CALLBACK_URL_HEADER,
    REQUEST_ID_HEADER,
    SESSION_HEADER,
    WORKLOAD_ACCESS_TOKEN_HEADER,
    forwardable_headers,
    parse_baggage,
)

__all__ = [
    "CONFIG_BUNDLE_ARN_BAGGAGE",
    "CONFIG_BUNDLE_VERSION_BAGGAGE",
    "EXPERIMENT_ARN_BAGGAGE",
    "EXPERIMENT_VARIANT_BAGGAGE",
    "BedrockAgentCoreContext",
    "ConfigBundleRef",
    "RequestContext",
    "bind_request_context",
]

CONFIG_BUNDLE_ARN_BAGGAGE = "aws.agentcore.configbundle_arn"
CONFIG_BUNDLE_VERSION_BAGGAGE = "aws.agentcore.configbundle_version"
EXPERIMENT_ARN_BAGGAGE = "aws.agentcore.gateway.routing_experiment_arn"
EXPERIMENT_VARIANT_BAGGAGE = "aws.agentcore.gateway.routing_experiment_variant_name"


class _TaskTracker(Protocol):
    def add_async_task(self, name: str, metadata: dict[str, Any] | None = None) -> int: ...

    def complete_async_task(self, task_id: int) -> bool: ...


@dataclass
class RequestContext:
    """The session, the forwarded headers and the raw Starlette ``Request`` (or ``WebSocket``) of one call.

    ``add_async_task`` / ``complete_async_task`` reach the app's task registry, so a handler can mark background
    work without holding a reference to the app.
    """

    session_id: str | None = None
    request_headers: dict[str, str] | None = None
    request: Any | None = None
    _tasks: _TaskTracker | None = field(default=None, repr=False, compare=False)

    def add_async_task(self, name: str, metadata: dict[str, Any] | None = None) -> int:
        return self._tracker().add_async_task(name, metadata)

    def complete_async_task(self, task_id: int) -> bool:
        return self._tracker().complete_async_task(task_id)

    def _tracker(self) -> _TaskTracker:
        if self._tasks is None:
            raise RuntimeError("this RequestContext is not bound to an app; use app.add_async_task instead")
        return self._tasks


@dataclass(frozen=True)
class ConfigBundleRef:
    """A configuration bundle version named by the request's W3C baggage (preview feature of the contract)."""

    bundle_arn: str
    bundle_version: str

    def __post_init__(self) -> None:
        if not self.bundle_arn or not self.bundle_version:
            raise ValueError("bundle_arn and bundle_version must not be empty")
        if not self.bundle_arn.rpartition("/")[2] or "/" not in self.bundle_arn:
            raise ValueError(f"bundle_arn has no bundle id segment: {self.bundle_arn!r}")

    @property
    def bundle_id(self) -> str:
        return self.bundle_arn.rpartition("/")[2]


class BedrockAgentCoreContext:
    """Request-scoped facts as class-level accessors over context variables (one value per request)."""

    _workload_access_token: ContextVar[str | None] = ContextVar("hangar_workload_access_token", default=None)
    _oauth2_callback_url: ContextVar[str | None] = ContextVar("hangar_oauth2_callback_url", default=None)
    _request_id: ContextVar[str | None] = ContextVar("hangar_request_id", default=None)
    _session_id: ContextVar[str | None] = ContextVar("hangar_session_id", default=None)
    _request_headers: ContextVar[dict[str, str] | None] = ContextVar("hangar_request_headers", default=None)
    _experiment_arn: ContextVar[str | None] = ContextVar("hangar_routing_experiment_arn", default=None)
    _experiment_variant: ContextVar[str | None] = ContextVar("hangar_routing_experiment_variant", default=None)
    _config_bundle_ref: ContextVar[ConfigBundleRef | None] = ContextVar("hangar_config_bundle_ref", default=None)

    @classmethod
    def set_workload_access_token(cls, token: str | None) -> None:
        cls._workload_access_token.set(token)

    @classmethod
    def get_workload_access_token(cls) -> str | None:
        return cls._workload_access_token.get()

    @classmethod
    def set_oauth2_callback_url(cls, url: str | None) -> None:
        cls._oauth2_callback_url.set(url)

    @classmethod
    def get_oauth2_callback_url(cls) -> str | None:
        return cls._oauth2_callback_url.get()

    @classmethod
    def set_request_context(cls, request_id: str, session_id: str | None = None) -> None:
        cls._request_id.set(request_id)
        cls._session_id.set(session_id)

    @classmethod
    def get_request_id(cls) -> str | None:
        return cls._request_id.get()

    @classmethod
    def get_session_id(cls) -> str | None:
        return cls._session_id.get()

    @classmethod
    def set_request_headers(cls, headers: dict[str, str] | None) -> None:
        cls._request_headers.set(headers)

    @classmethod
    def get_request_headers(cls) -> dict[str, str] | None:
        return cls._request_headers.get()

    @classmethod
    def set_routing_experiment(cls, arn: str | None, variant: str | None) -> None:
        cls._experiment_arn.set(arn)
        cls._experiment_variant.set(variant)

    @classmethod
    def get_routing_experiment_arn(cls) -> str | None:
        return cls._experiment_arn.get()

    @classmethod
    def get_routing_experiment_variant(cls) -> str | None:
        return cls._experiment_variant.get()

    @classmethod
    def set_config_bundle_ref(cls, ref: ConfigBundleRef | None) -> None:
        cls._config_bundle_ref.set(ref)

    @classmethod
    def get_config_bundle_ref(cls) -> ConfigBundleRef | None:
        return cls._config_bundle_ref.get()

    @classmethod
    def get_config_bundle(cls) -> dict[str, Any]:
        """``{}`` when the request names no bundle, as in AgentCore; Hangar has no bundle service to fetch one from."""
        ref = cls.get_config_bundle_ref()
        if ref is None:
            return {}
        raise NotImplementedError(f"configuration bundle {ref.bundle_id!r}: Hangar serves no configuration bundles")


def bind_request_context(connection: HTTPConnection, tasks: _TaskTracker | None) -> RequestContext:
    """Read the contract's headers from an HTTP request or WebSocket into context variables and a RequestContext."""
    headers = connection.headers
    pairs = headers.items()
    session_id = headers.get(SESSION_HEADER)
    BedrockAgentCoreContext.set_request_context(headers.get(REQUEST_ID_HEADER) or str(uuid.uuid4()), session_id)
    BedrockAgentCoreContext.set_workload_access_token(
        headers.get(IDENTITY_WAT_HEADER) or headers.get(WORKLOAD_ACCESS_TOKEN_HEADER) or None
    )
    BedrockAgentCoreContext.set_oauth2_callback_url(headers.get(OAUTH2_CALLBACK_URL_HEADER) or None)
    forwarded = forwardable_headers(pairs)
    BedrockAgentCoreContext.set_request_headers(forwarded)
    baggage = parse_baggage(pairs)
    BedrockAgentCoreContext.set_config_bundle_ref(_bundle_ref(baggage))
    BedrockAgentCoreContext.set_routing_experiment(
        next(iter(baggage.get(EXPERIMENT_ARN_BAGGAGE, [])), None),
        next(iter(baggage.get(EXPERIMENT_VARIANT_BAGGAGE, [])), None),
    )
    return RequestContext(session_id=session_id, request_headers=forwarded, request=connection, _tasks=tasks)


def _bundle_ref(baggage: dict[str, list[str]]) -> ConfigBundleRef | None:
    arns = baggage.get(CONFIG_BUNDLE_ARN_BAGGAGE)
    versions = baggage.get(CONFIG_BUNDLE_VERSION_BAGGAGE)
    if not arns or not versions:
        return None
    try:
        return ConfigBundleRef(bundle_arn=arns[0], bundle_version=versions[0])
    except ValueError:
        return None
