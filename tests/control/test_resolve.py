"""``ControlPlane.resolve_target``, the data plane's seam, read from the store a real server writes."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import pytest

from hangar.config import Settings
from hangar.control import commands
from hangar.control.service import ControlPlane
from hangar.control.setup import build_control
from hangar.domain.errors import ConflictError, NotFoundError, ValidationError
from hangar.store.engine import open_engine
from tests.control.support import ROLE, code_artifact, container_artifact, unique_name, wait_settled, wait_until
from tests.support.server import HangarServer

JWT = {
    "customJWTAuthorizer": {
        "discoveryUrl": "https://idp.example.com/.well-known/openid-configuration",
        "allowedClients": ["cli"],
    }
}


@pytest.fixture(scope="module")
def plane(server: HangarServer) -> Iterator[ControlPlane]:
    """A second ControlPlane on the server's store, as another gateway process would have (no worker)."""
    settings = Settings(data_dir=server.data_dir)
    control, _ = build_control(settings, engine := open_engine(settings.resolved_database_url))
    yield control
    engine.dispose()


@pytest.fixture(scope="module")
def mcp_runtime(client: Any) -> dict[str, Any]:
    created = client.create_agent_runtime(
        agentRuntimeName=unique_name("mcp"),
        agentRuntimeArtifact=code_artifact(),
        roleArn=ROLE,
        protocolConfiguration={"serverProtocol": "MCP"},
        environmentVariables={"TOKEN": "t"},
        lifecycleConfiguration={"idleRuntimeSessionTimeout": 300, "maxLifetime": 3600},
        requestHeaderConfiguration={"requestHeaderAllowlist": ["Authorization", "X-Tenant"]},
        authorizerConfiguration=JWT,
    )
    runtime_id = created["agentRuntimeId"]
    assert wait_settled(lambda: client.get_agent_runtime(agentRuntimeId=runtime_id))["status"] == "READY"
    client.create_agent_runtime_endpoint(agentRuntimeId=runtime_id, name="prod")
    wait_until(
        lambda: client.get_agent_runtime_endpoint(agentRuntimeId=runtime_id, endpointName="prod"),
        lambda e: e["status"] == "READY",
    )
    return created


def test_resolves_by_arn_and_by_id(plane: ControlPlane, mcp_runtime: dict[str, Any]) -> None:
    by_arn = plane.resolve_target(mcp_runtime["agentRuntimeArn"], None, None)
    assert by_arn.endpoint_name == "DEFAULT" and by_arn.version == "1"
    assert (by_arn.protocol, by_arn.port, by_arn.path) == ("MCP", 8000, "/mcp")
    assert by_arn.environment == {"TOKEN": "t"}
    assert (by_arn.idle_timeout_s, by_arn.max_lifetime_s) == (300, 3600)
    assert by_arn.header_allowlist == ("Authorization", "X-Tenant")
    assert by_arn.jwt_authorizer == JWT["customJWTAuthorizer"]
    assert by_arn.network_mode == "PUBLIC" and by_arn.account_id == "123456789012"
    assert (by_arn.prepared.env_dir / "bin" / "python").exists()
    assert (by_arn.prepared.code_dir / "main.py").exists()
    by_id = plane.resolve_target(mcp_runtime["agentRuntimeId"], "prod", "123456789012")
    assert by_id.endpoint_name == "prod" and by_id.prepared == by_arn.prepared
    assert plane.resolve_target(mcp_runtime["agentRuntimeArn"], None, None) is by_arn  # cached


def test_refusals(plane: ControlPlane, mcp_runtime: dict[str, Any], client: Any) -> None:
    runtime_id, arn = mcp_runtime["agentRuntimeId"], mcp_runtime["agentRuntimeArn"]
    with pytest.raises(ValidationError):
        plane.resolve_target(runtime_id, None, None)  # an id needs the account
    with pytest.raises(NotFoundError):
        plane.resolve_target(runtime_id, None, "210987654321")
    with pytest.raises(NotFoundError):
        plane.resolve_target(arn.replace("us-west-2", "eu-west-1"), None, None)
    with pytest.raises(ValidationError):
        plane.resolve_target(f"{arn}/runtime-endpoint/DEFAULT", None, None)
    with pytest.raises(ValidationError):
        plane.resolve_target("../../etc/passwd", None, "123456789012")
    with pytest.raises(ValidationError):
        plane.resolve_target(arn, "not-an-endpoint", None)
    with pytest.raises(NotFoundError):
        plane.resolve_target(arn, "staging", None)
    with pytest.raises(NotFoundError):
        plane.resolve_target("ghost-abcdefghij", None, "123456789012")
    failed = client.create_agent_runtime(
        agentRuntimeName=unique_name("img"), agentRuntimeArtifact=container_artifact(), roleArn=ROLE
    )
    wait_settled(lambda: client.get_agent_runtime(agentRuntimeId=failed["agentRuntimeId"]))
    with pytest.raises(ConflictError, match="repository name not known to registry"):
        plane.resolve_target(failed["agentRuntimeArn"], None, None)


def test_own_writes_invalidate_the_cache(plane: ControlPlane, mcp_runtime: dict[str, Any]) -> None:
    arn = mcp_runtime["agentRuntimeArn"]
    assert plane.resolve_target(arn, "prod", None).endpoint_name == "prod"
    asyncio.run(plane.execute(commands.DeleteEndpoint(runtime_id=mcp_runtime["agentRuntimeId"], name="prod")))
    with pytest.raises(NotFoundError):
        plane.resolve_target(arn, "prod", None)


def test_a_load_overlapping_a_write_is_not_kept(
    plane: ControlPlane, mcp_runtime: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A background pass resolving in a thread may read the store just before a write commits: what it read must
    not outlive that write's invalidation (CI once saw an endpoint moved to version 2 still answer with 1)."""
    arn = mcp_runtime["agentRuntimeArn"]
    resolver = plane.resolver
    resolver.invalidate()
    load = resolver._load

    def load_then_a_write_commits(*args: Any) -> Any:
        routing = load(*args)
        resolver.invalidate()  # what ctx.after_write does once a write made during this read commits
        return routing

    monkeypatch.setattr(resolver, "_load", load_then_a_write_commits)
    first = plane.resolve_target(arn, None, None)
    monkeypatch.setattr(resolver, "_load", load)
    assert plane.resolve_target(arn, None, None) is not first  # loaded again, not served from the cache
    again = plane.resolve_target(arn, None, None)
    assert plane.resolve_target(arn, None, None) is again  # a quiet load is cached as before
