"""Workload identity for an agent on a ``hangar node``: a Ray head, one gateway (``hangar serve --cluster``), one node
given copies of the gateway's ``identity/vault.keys`` and ``identity/wat.key``, one PostgreSQL and a real panva
oidc-provider, all on loopback in the cluster's network namespace.

The agent (hangar.sdk + plain boto3, tests/cluster/agents/nodeidentity) gets AWS credentials from the node's
credentials endpoint, fetches an API key with the token the gateway minted for its invocation, gets a workload
access token for a user JWT from the node's identity endpoint that the gateway's public data plane accepts, and is
refused (403) when it calls a runtime through that endpoint. A node missing or holding a wrong key refuses to start.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import subprocess
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, cast
from urllib.parse import quote

import httpx
import jwt as pyjwt
import pytest
from sqlalchemy import insert

from hangar.cluster.node_identity import build_node_identity
from hangar.config import Settings
from hangar.identity.control import api_key_context
from hangar.identity.shared_keys import record_wat_key, require_wat_key
from hangar.identity.vault import KeyRing, Vault
from hangar.store.engine import open_engine
from hangar.store.tables import api_key_providers
from hangar.store.transactions import Store
from tests.control.support import signed
from tests.dataplane.support import BUCKET, deploy, wait_for, world_readable_dir
from tests.support.idp_common import RunningIdp
from tests.support.idp_panva import start_panva
from tests.support.postgres import PostgresCluster
from tests.support.postgres import unavailable_reason as postgres_missing
from tests.support.ray_cluster import NodeProcess, RayCluster, ray_cluster  # noqa: F401 - the fixture
from tests.support.server import HANGAR_BIN, HangarServer, read_admin_key

AGENT = Path(__file__).parent / "agents" / "nodeidentity"
API_KEY = f"sk-node-{uuid.uuid4().hex}"
SHARED_KEYS = ("vault.keys", "wat.key")  # under identity/ of the first gateway's data dir
pytestmark = pytest.mark.timeout(900)


@dataclass
class World:
    cluster: RayCluster
    gateway: HangarServer
    node: NodeProcess
    idp: RunningIdp
    runtime: dict[str, Any]
    provider: str
    root: Path
    database_url: str

    def invoke(self, payload: dict[str, Any], session_id: str | None = None) -> dict[str, Any]:
        """An invocation authorized with a user's JWT (the runtime's customJWTAuthorizer), answered by the node."""
        url = f"{self.gateway.url}/runtimes/{quote(self.runtime['agentRuntimeArn'], safe='')}/invocations"
        headers = {
            "Authorization": f"Bearer {self.idp.token('agent-client')}",
            "X-Amzn-Bedrock-AgentCore-Runtime-Session-Id": session_id or f"nodeid-{uuid.uuid4()}",
            "Content-Type": "application/json",
        }
        answer = httpx.post(url, headers=headers, content=json.dumps(payload).encode(), timeout=300)
        assert answer.status_code == 200, answer.text
        return dict(answer.json())

    def node_command(self, data_dir: Path) -> subprocess.CompletedProcess[str]:
        """``hangar node`` on ``data_dir``, expected to refuse before it joins anything."""
        args = [str(HANGAR_BIN), "node", "--data-dir", str(data_dir), "--listen", "127.0.0.1:1"]
        args += ["--database-url", self.database_url, "--gateway", self.gateway.url, "--name", "refused"]
        env = {**os.environ, **self.cluster.env}
        return subprocess.run(args, env=env, capture_output=True, text=True, timeout=300)


def give_keys(gateway: HangarServer, data_dir: Path) -> None:
    (data_dir / "identity").mkdir(parents=True, exist_ok=True, mode=0o700)
    for name in SHARED_KEYS:
        shutil.copy2(gateway.data_dir / "identity" / name, data_dir / "identity" / name)


@pytest.fixture(scope="module")
def world(ray_cluster: RayCluster) -> Iterator[World]:  # noqa: F811 - the imported fixture
    reason = postgres_missing()
    if reason is not None:
        pytest.skip(reason)
    postgres = PostgresCluster.start()  # after the cluster: inside its network namespace, with the node and the IdP
    gateway: HangarServer | None = None
    idp: RunningIdp | None = None
    try:
        with world_readable_dir("hangar-nodeid-") as root:
            shutil.copytree(AGENT, root / "artifacts" / BUCKET / "nodeidentity")
            idp = start_panva(root / "idp")
            env = {
                "HANGAR_DATABASE_URL": postgres.new_database(),
                "HANGAR_ARTIFACTS_DIR": str(root / "artifacts"),
                "HANGAR_CLUSTER": "1",
            }
            gateway = HangarServer(data_dir=root / "gw", env=env).start()
            control = gateway.boto3_client("bedrock-agentcore-control")
            provider = f"key-{uuid.uuid4().hex[:8]}"
            control.create_api_key_credential_provider(name=provider, apiKey=API_KEY)
            authorizer = {
                "customJWTAuthorizer": {
                    "discoveryUrl": idp.discovery_url,
                    "allowedAudience": [idp.audience],
                    "allowedClients": ["agent-client"],
                }
            }
            runtime = deploy(control, "nodeidentity", authorizerConfiguration=authorizer)
            give_keys(gateway, root / "node")
            node = ray_cluster.start_node(
                root / "node",
                database_url=env["HANGAR_DATABASE_URL"],
                gateway=gateway.url,
                name=f"nodeid-{uuid.uuid4().hex[:4]}",
                slots=8,
                env={"AWS_SHARED_CREDENTIALS_FILE": str(gateway.credentials_file)},
            )
            world = World(ray_cluster, gateway, node, idp, runtime, provider, root, env["HANGAR_DATABASE_URL"])
            wait_for(lambda: len(signed(gateway, "GET", "/hangar/nodes/").json()["nodes"]) == 1, timeout=60)
            yield world
    finally:
        if gateway is not None:
            gateway.stop()
        if idp is not None:
            idp.stop()
        postgres.stop()


def test_the_agent_gets_aws_credentials_from_the_nodes_endpoint(world: World) -> None:
    got = world.invoke({"action": "credentials"})
    assert got["hasToken"] and got["accessKeyId"]
    assert got["accessKeyId"] != read_admin_key(world.gateway.credentials_file)[0]  # the sandbox's own key


def test_a_token_the_gateway_minted_fetches_the_api_key_on_the_node(world: World) -> None:
    assert world.invoke({"action": "api_key", "provider": world.provider}) == {"apiKey": API_KEY}


def test_a_token_the_node_minted_for_a_user_jwt_works_at_the_gateway_and_back(world: World) -> None:
    user_token = world.idp.token("agent-client")
    workload = world.runtime["agentRuntimeId"]
    minted = world.invoke({"action": "wat_for_jwt", "workload": workload, "token": user_token})
    assert "wat" in minted, minted
    claims = pyjwt.decode(minted["wat"], options={"verify_signature": False})
    assert claims["wl"] == workload
    assert claims["sub"] == pyjwt.decode(user_token, options={"verify_signature": False})["sub"]
    data = world.gateway.boto3_client("bedrock-agentcore")
    fetched = data.get_resource_api_key(
        workloadIdentityToken=minted["wat"], resourceCredentialProviderName=world.provider
    )
    assert fetched["apiKey"] == API_KEY  # the gateway's public data plane verified the node's token
    # and the reverse: a token from the gateway's public data plane, used by the agent on the node
    public = data.get_workload_access_token(workloadName=workload)["workloadAccessToken"]
    assert world.invoke({"action": "api_key", "provider": world.provider, "wat": public}) == {"apiKey": API_KEY}


def test_a_forged_token_is_refused_on_the_node(world: World) -> None:
    workload = world.runtime["agentRuntimeId"]
    forged = pyjwt.encode(
        {
            "iss": "hangar:identity",
            "aud": "hangar:workload-access-token",
            "wl": workload,
            "iat": 1,
            "exp": 2**31,
            "jti": "x",
        },
        secrets.token_bytes(32),
        algorithm="HS256",
    )
    refused = world.invoke({"action": "api_key", "provider": world.provider, "wat": forged})
    assert refused["error"] == "UnauthorizedException" and refused["status"] == 401, refused


def test_calls_to_runtimes_from_a_node_are_refused(world: World) -> None:
    refused = world.invoke({"action": "invoke", "arn": world.runtime["agentRuntimeArn"]})
    assert refused["error"] == "AccessDeniedException" and refused["status"] == 403, refused
    assert "cluster node" in refused["message"]


def test_a_node_without_the_gateways_keys_refuses_to_start(world: World) -> None:
    bare = world.root / "node-bare"
    done = world.node_command(bare)
    assert done.returncode == 2, done.stderr
    assert "vault.keys" in done.stderr and "refusing to start" in done.stderr

    give_keys(world.gateway, bare)
    (bare / "identity" / "wat.key").write_bytes(secrets.token_bytes(32))
    done = world.node_command(bare)
    assert done.returncode == 2, done.stderr
    assert "not the gateways' workload access token key" in done.stderr

    (bare / "identity" / "wat.key").unlink()
    done = world.node_command(bare)
    assert done.returncode == 2 and "wat.key is missing" in done.stderr, done.stderr

    give_keys(world.gateway, bare)
    (bare / "identity" / "vault.keys").unlink()
    KeyRing(bare / "identity" / "vault.keys")  # a vault of its own: cannot open the API key the gateway sealed
    done = world.node_command(bare)
    assert done.returncode == 2 and "cannot open the store's sealed secrets" in done.stderr, done.stderr


# --- the start checks on their own, on a real (SQLite) store: no Ray needed


@pytest.fixture
def store_world(tmp_path: Path) -> Iterator[tuple[Settings, Any]]:
    settings = Settings(data_dir=tmp_path / "node")
    engine = open_engine(Settings(data_dir=tmp_path).resolved_database_url)
    yield settings, engine
    engine.dispose()


def test_the_wat_key_must_be_the_one_the_gateways_recorded(tmp_path: Path, store_world: tuple[Settings, Any]) -> None:
    _, engine = store_world
    store, path = Store(engine), tmp_path / "wat.key"
    path.write_bytes(secrets.token_bytes(32))
    with pytest.raises(RuntimeError, match="no gateway has recorded"):
        require_wat_key(path, store)
    record_wat_key(store, path.read_bytes())
    assert require_wat_key(path, store) == path.read_bytes()
    record_wat_key(store, secrets.token_bytes(32))  # another gateway, another key: the last one wins
    with pytest.raises(RuntimeError, match="not the gateways'"):
        require_wat_key(path, store)
    path.unlink()
    with pytest.raises(RuntimeError, match="is missing"):
        require_wat_key(path, store)


def test_a_node_given_no_keys_serves_no_identity_until_something_is_sealed(store_world: tuple[Settings, Any]) -> None:
    settings, engine = store_world
    assert build_node_identity(settings, engine, cast(Any, None)) is None  # warned, nothing created
    assert not (settings.data_dir / "identity").exists()
    vault = Vault(KeyRing(settings.data_dir.parent / "gateway-vault.keys"))
    now = datetime.now(UTC)
    sealed = vault.seal(b"sk-x", api_key_context("p"))
    Store(engine).write(
        lambda conn: conn.execute(
            insert(api_key_providers).values(name="p", api_key_sealed=sealed, created_at=now, updated_at=now)
        )
    )
    with pytest.raises(RuntimeError, match="holds sealed secrets"):
        build_node_identity(settings, engine, cast(Any, None))
