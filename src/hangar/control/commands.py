"""One typed command per control-plane operation, and the parsers that build them from a request.

The gateway hands each parser what it took off the wire (path parameters, query parameters, the JSON body);
the parser validates everything AWS validates and returns a frozen command, or raises one ValidationException
naming every bad field. Use cases only ever see commands.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field
from typing import Any, TypeVar

from hangar.domain.arns import TAGGABLE_ARN
from hangar.domain.errors import InternalError
from hangar.domain.names import CLIENT_TOKEN, ENDPOINT_NAME, ENDPOINT_NAME_HINT, RUNTIME_ID, VERSION
from hangar.domain.pagination import MAX_PAGE
from hangar.domain.runtime import RuntimeSpec, check_runtime_name, parse_runtime_spec
from hangar.domain.tags import check_tag_keys, check_tags
from hangar.domain.validation import Checker

Query = dict[str, list[str]]
T = TypeVar("T")


@dataclass(frozen=True)
class CreateRuntime:
    name: str
    spec: RuntimeSpec
    tags: dict[str, str] = field(default_factory=dict)
    client_token: str | None = None


@dataclass(frozen=True)
class UpdateRuntime:
    runtime_id: str
    spec: RuntimeSpec
    client_token: str | None = None


@dataclass(frozen=True)
class DeleteRuntime:
    runtime_id: str
    version: int | None = None
    client_token: str | None = None


@dataclass(frozen=True)
class GetRuntime:
    runtime_id: str
    version: int | None = None


@dataclass(frozen=True)
class ListRuntimes:
    max_results: int
    next_token: str | None = None


@dataclass(frozen=True)
class ListRuntimeVersions:
    runtime_id: str
    max_results: int
    next_token: str | None = None


@dataclass(frozen=True)
class CreateEndpoint:
    runtime_id: str
    name: str
    version: int | None = None
    description: str | None = None
    tags: dict[str, str] = field(default_factory=dict)
    client_token: str | None = None


@dataclass(frozen=True)
class GetEndpoint:
    runtime_id: str
    name: str


@dataclass(frozen=True)
class UpdateEndpoint:
    runtime_id: str
    name: str
    version: int | None = None
    description: str | None = None
    client_token: str | None = None


@dataclass(frozen=True)
class DeleteEndpoint:
    runtime_id: str
    name: str
    client_token: str | None = None


@dataclass(frozen=True)
class ListEndpoints:
    runtime_id: str
    max_results: int
    next_token: str | None = None


@dataclass(frozen=True)
class TagResource:
    resource_arn: str
    tags: dict[str, str]


@dataclass(frozen=True)
class UntagResource:
    resource_arn: str
    keys: tuple[str, ...]


@dataclass(frozen=True)
class ListTags:
    resource_arn: str


def request_hash(command: Any) -> str:
    """Fingerprint of a command without its client token: equal for a faithful retry, different otherwise."""
    data = asdict(command)
    data.pop("client_token", None)
    data["__op__"] = type(command).__name__
    return hashlib.sha256(json.dumps(data, sort_keys=True, default=str).encode()).hexdigest()


# -- parsers ---------------------------------------------------------------------------------------------------


def _present(value: T | None) -> T:
    """Once ``raise_if_any`` passed, every checked value is there; a None here is a bug in a parser."""
    if value is None:
        raise InternalError("a request passed validation without a required value")
    return value


def _one(query: Query, name: str) -> str | None:
    values = query.get(name)
    return values[-1] if values else None


def _runtime_id(check: Checker, value: str) -> str:
    return check.string(value, "agentRuntimeId", min_len=1, max_len=128, pattern=RUNTIME_ID) or ""


def _endpoint_name(check: Checker, value: Any, path: str) -> str:
    return check.string(value, path, min_len=1, max_len=48, pattern=ENDPOINT_NAME, hint=ENDPOINT_NAME_HINT) or ""


def _version(check: Checker, value: Any, path: str) -> int | None:
    text = check.string(value, path, min_len=1, max_len=5, pattern=VERSION)
    return int(text) if text is not None else None


def _client_token(check: Checker, value: Any, path: str = "clientToken") -> str | None:
    return check.string(value, path, min_len=33, max_len=256, pattern=CLIENT_TOKEN)


def _paging(check: Checker, query: Query) -> tuple[int, str | None]:
    raw = _one(query, "maxResults")
    max_results = MAX_PAGE
    if raw is not None:
        if not raw.isascii() or not raw.isdigit() or len(raw) > 6:
            check.fail("maxResults", "Member must be an integer", raw)
        else:
            max_results = check.integer(int(raw), "maxResults", minimum=1, maximum=MAX_PAGE) or MAX_PAGE
    token = check.string(_one(query, "nextToken"), "nextToken", min_len=1, max_len=2048, pattern=r"\S*")
    return max_results, token


def parse_create_runtime(body: dict[str, Any]) -> CreateRuntime:
    check = Checker()
    name = check_runtime_name(check, check.required(body, "agentRuntimeName", "agentRuntimeName"))
    spec = parse_runtime_spec(body, check)
    tags = check_tags(check, body.get("tags")) or {}
    token = _client_token(check, body.get("clientToken"))
    check.raise_if_any()
    return CreateRuntime(name=_present(name), spec=_present(spec), tags=tags, client_token=token)


def parse_update_runtime(runtime_id: str, body: dict[str, Any]) -> UpdateRuntime:
    check = Checker()
    runtime_id = _runtime_id(check, runtime_id)
    spec = parse_runtime_spec(body, check)
    token = _client_token(check, body.get("clientToken"))
    check.raise_if_any()
    return UpdateRuntime(runtime_id=runtime_id, spec=_present(spec), client_token=token)


def parse_delete_runtime(runtime_id: str, query: Query) -> DeleteRuntime:
    check = Checker()
    command = DeleteRuntime(
        runtime_id=_runtime_id(check, runtime_id),
        version=_version(check, _one(query, "version"), "agentRuntimeVersion"),
        client_token=_client_token(check, _one(query, "clientToken")),
    )
    check.raise_if_any()
    return command


def parse_get_runtime(runtime_id: str, query: Query) -> GetRuntime:
    check = Checker()
    command = GetRuntime(
        runtime_id=_runtime_id(check, runtime_id),
        version=_version(check, _one(query, "version"), "agentRuntimeVersion"),
    )
    check.raise_if_any()
    return command


def parse_list_runtimes(query: Query) -> ListRuntimes:
    check = Checker()
    max_results, token = _paging(check, query)
    check.raise_if_any()
    return ListRuntimes(max_results=max_results, next_token=token)


def parse_list_versions(runtime_id: str, query: Query) -> ListRuntimeVersions:
    check = Checker()
    runtime_id = _runtime_id(check, runtime_id)
    max_results, token = _paging(check, query)
    check.raise_if_any()
    return ListRuntimeVersions(runtime_id=runtime_id, max_results=max_results, next_token=token)


def parse_create_endpoint(runtime_id: str, body: dict[str, Any]) -> CreateEndpoint:
    check = Checker()
    command = CreateEndpoint(
        runtime_id=_runtime_id(check, runtime_id),
        name=_endpoint_name(check, check.required(body, "name", "name"), "name"),
        version=_version(check, body.get("agentRuntimeVersion"), "agentRuntimeVersion"),
        description=check.string(body.get("description"), "description", min_len=1, max_len=256),
        tags=check_tags(check, body.get("tags")) or {},
        client_token=_client_token(check, body.get("clientToken")),
    )
    check.raise_if_any()
    return command


def parse_get_endpoint(runtime_id: str, name: str) -> GetEndpoint:
    check = Checker()
    command = GetEndpoint(runtime_id=_runtime_id(check, runtime_id), name=_endpoint_name(check, name, "endpointName"))
    check.raise_if_any()
    return command


def parse_update_endpoint(runtime_id: str, name: str, body: dict[str, Any]) -> UpdateEndpoint:
    check = Checker()
    command = UpdateEndpoint(
        runtime_id=_runtime_id(check, runtime_id),
        name=_endpoint_name(check, name, "endpointName"),
        version=_version(check, body.get("agentRuntimeVersion"), "agentRuntimeVersion"),
        description=check.string(body.get("description"), "description", min_len=1, max_len=256),
        client_token=_client_token(check, body.get("clientToken")),
    )
    check.raise_if_any()
    return command


def parse_delete_endpoint(runtime_id: str, name: str, query: Query) -> DeleteEndpoint:
    check = Checker()
    command = DeleteEndpoint(
        runtime_id=_runtime_id(check, runtime_id),
        name=_endpoint_name(check, name, "endpointName"),
        client_token=_client_token(check, _one(query, "clientToken")),
    )
    check.raise_if_any()
    return command


def parse_list_endpoints(runtime_id: str, query: Query) -> ListEndpoints:
    check = Checker()
    runtime_id = _runtime_id(check, runtime_id)
    max_results, token = _paging(check, query)
    check.raise_if_any()
    return ListEndpoints(runtime_id=runtime_id, max_results=max_results, next_token=token)


def _resource_arn(check: Checker, value: str) -> str:
    return check.string(value, "resourceArn", min_len=20, max_len=1011, pattern=TAGGABLE_ARN) or ""


def parse_tag_resource(resource_arn: str, body: dict[str, Any]) -> TagResource:
    check = Checker()
    arn = _resource_arn(check, resource_arn)
    tags = check_tags(check, check.required(body, "tags", "tags"))
    check.raise_if_any()
    return TagResource(resource_arn=arn, tags=tags or {})


def parse_untag_resource(resource_arn: str, query: Query) -> UntagResource:
    check = Checker()
    arn = _resource_arn(check, resource_arn)
    keys = check_tag_keys(check, query.get("tagKeys", []))
    check.raise_if_any()
    return UntagResource(resource_arn=arn, keys=tuple(keys or ()))


def parse_list_tags(resource_arn: str) -> ListTags:
    check = Checker()
    arn = _resource_arn(check, resource_arn)
    check.raise_if_any()
    return ListTags(resource_arn=arn)
