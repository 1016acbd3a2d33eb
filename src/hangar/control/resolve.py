"""``resolve_target``: runtime ARN or id + qualifier → the ``InvocationTarget`` the data plane runs.

It runs on every invocation, so answers are cached in process. The cache is dropped on every write this process
commits; entries also expire after ``TTL_S`` so that writes made by another gateway on a shared PostgreSQL
store are seen within that time.
"""

from __future__ import annotations

import re
import secrets
import threading
import time
from typing import Any

from sqlalchemy import Connection

from hangar.control.context import Context
from hangar.domain.arns import parse_resource_arn
from hangar.domain.errors import ConflictError, NotFoundError, ValidationError
from hangar.domain.invocation import PROTOCOL_DEFAULTS, InvocationTarget
from hangar.domain.names import DEFAULT_ENDPOINT, ENDPOINT_NAME, RUNTIME_ID
from hangar.domain.runtime import Runtime, Status, Version
from hangar.domain.split import Split
from hangar.store import endpoints as endpoint_rows
from hangar.store import runtimes as rows
from hangar.store import splits as split_rows

TTL_S = 2.0
MAX_ENTRIES = 4096


class TargetResolver:
    def __init__(self, ctx: Context) -> None:
        self.ctx = ctx
        self._cache: dict[tuple[str, str], tuple[float, Routing]] = {}
        self._lock = threading.Lock()
        self._generation = 0  # bumped by every invalidation: a load that overlapped one is not cached

    def invalidate(self) -> None:
        with self._lock:
            self._generation += 1
            self._cache.clear()

    def resolve(
        self, runtime_ref: str, qualifier: str | None, account_id: str | None, session_id: str | None = None
    ) -> InvocationTarget:
        """The version a call runs: the endpoint's live one, or under a traffic split the one ``session_id`` maps
        to (a random pick when the id is not known yet)."""
        runtime_id = self._runtime_id(runtime_ref, account_id)
        endpoint_name = qualifier or DEFAULT_ENDPOINT
        if re.fullmatch(ENDPOINT_NAME, endpoint_name) is None:
            raise ValidationError(f"Invalid qualifier {endpoint_name[:64]!r}: must be an endpoint name")
        key = (runtime_id, endpoint_name)
        now = time.monotonic()
        with self._lock:
            cached = self._cache.get(key)
            generation = self._generation
        if cached is not None and cached[0] > now:
            return cached[1].target(session_id)
        routing = self.ctx.store.read(lambda conn: self._load(conn, runtime_id, endpoint_name))
        with self._lock:
            # A write committed while this load ran (a background pass resolving in a thread, say) may have
            # changed what it read: answer with it once, but never keep it past that write's invalidation.
            if generation == self._generation:
                if len(self._cache) >= MAX_ENTRIES:
                    self._cache.clear()
                self._cache[key] = (now + TTL_S, routing)
        return routing.target(session_id)

    def _runtime_id(self, runtime_ref: str, account_id: str | None) -> str:
        place = self.ctx.place
        if runtime_ref.startswith("arn:"):
            ref = parse_resource_arn(runtime_ref)
            if ref is None or ref.endpoint_name is not None:
                raise ValidationError(f"Invalid agent runtime ARN {runtime_ref[:200]!r}")
            if ref.account_id != place.account_id or ref.region != place.region:
                raise NotFoundError(f"No agent runtime {runtime_ref}")
            if account_id is not None and account_id != ref.account_id:
                raise ValidationError("accountId does not match the account in the runtime ARN")
            return ref.runtime_id
        if re.fullmatch(RUNTIME_ID, runtime_ref) is None:
            raise ValidationError(f"Invalid agent runtime id or ARN {runtime_ref[:200]!r}")
        if account_id is None:
            raise ValidationError("accountId is required when the runtime is named by its id")
        if re.fullmatch(r"[0-9]{12}", account_id) is None:
            raise ValidationError("accountId must be 12 digits")
        if account_id != place.account_id:
            raise NotFoundError(f"No agent runtime {runtime_ref} in account {account_id}")
        return runtime_ref

    def _load(self, conn: Connection, runtime_id: str, endpoint_name: str) -> Routing:
        live = self._live_target(conn, runtime_id, endpoint_name)
        split = split_rows.get_split(conn, runtime_id, endpoint_name)
        if split is None or str(split.base_version) != live.version:
            return Routing(live)  # no split, or the endpoint moved since it was set
        runtime = rows.get_runtime(conn, runtime_id)
        targets: dict[int, InvocationTarget] = {}
        for number, _ in split.weights:
            version = rows.get_version(conn, runtime_id, number)
            if runtime is None or version is None or version.status != Status.READY or version.prepared is None:
                return Routing(live)  # applies once both versions are READY
            targets[number] = self._target(runtime, endpoint_name, version)
        return Routing(live, split, targets)

    def _live_target(self, conn: Connection, runtime_id: str, endpoint_name: str) -> InvocationTarget:
        runtime = rows.get_runtime(conn, runtime_id)
        if runtime is None or runtime.status == Status.DELETING:
            raise NotFoundError(f"No agent runtime with id {runtime_id}")
        endpoint = endpoint_rows.get_endpoint(conn, runtime_id, endpoint_name)
        if endpoint is None or endpoint.status == Status.DELETING:
            raise NotFoundError(f"Agent runtime {runtime_id} has no endpoint named {endpoint_name}")
        if endpoint.live_version is None:
            detail = f": {endpoint.failure_reason}" if endpoint.failure_reason else ""
            raise ConflictError(
                f"Endpoint {endpoint_name} of agent runtime {runtime_id} is {endpoint.status.value} and serves no"
                f" version yet{detail}"
            )
        version = rows.get_version(conn, runtime_id, endpoint.live_version)
        if version is None or version.status != Status.READY or version.prepared is None:
            raise ConflictError(f"Version {endpoint.live_version} of agent runtime {runtime_id} is not READY")
        return self._target(runtime, endpoint_name, version)

    def _target(self, runtime: Runtime, endpoint_name: str, version: Version) -> InvocationTarget:
        runtime_id = runtime.runtime_id
        assert version.prepared is not None  # callers checked it is READY
        spec = version.spec
        protocol = spec.protocol.get("serverProtocol", "HTTP")
        default_port, default_path = PROTOCOL_DEFAULTS[protocol]
        authorizer = (spec.authorizer or {}).get("customJWTAuthorizer")
        return InvocationTarget(
            account_id=self.ctx.place.account_id,
            runtime_id=runtime_id,
            runtime_arn=self.ctx.place.runtime_arn(runtime_id),
            runtime_name=runtime.name,
            endpoint_name=endpoint_name,
            version=str(version.number),
            protocol=protocol,
            port=spec.protocol.get("port", default_port),
            path=spec.protocol.get("path", default_path),
            network_mode=spec.network["networkMode"],
            idle_timeout_s=spec.lifecycle["idleRuntimeSessionTimeout"],
            max_lifetime_s=spec.lifecycle["maxLifetime"],
            prepared=version.prepared,
            environment=dict(spec.environment),
            header_allowlist=tuple((spec.request_headers or {}).get("requestHeaderAllowlist", ())),
            jwt_authorizer=authorizer,
            minimum_memory_mib=_minimum_memory_mib(spec.extras.get("resourceConfigurations")),
            filesystems=tuple(spec.extras.get("filesystemConfigurations") or ()),
        )


class Routing:
    """What an endpoint resolves to: its live version's target, or a split's targets chosen per session id."""

    def __init__(
        self, live: InvocationTarget, split: Split | None = None, targets: dict[int, InvocationTarget] | None = None
    ) -> None:
        self.live = live
        self.split = split
        self.targets = targets or {}

    def target(self, session_id: str | None) -> InvocationTarget:
        if self.split is None:
            return self.live
        chosen = self.split.choose(self.live.runtime_id, self.live.endpoint_name, session_id or secrets.token_hex(16))
        return self.targets[chosen]


def _minimum_memory_mib(configurations: Any) -> int | None:
    """``resourceConfigurations[0].minimumMemoryInMiB`` (validated at create/update), if the version sets it."""
    for configuration in configurations or []:
        value = configuration.get("minimumMemoryInMiB")
        return int(value) if value is not None else None
    return None
