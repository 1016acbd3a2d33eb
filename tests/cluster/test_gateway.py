"""``hangar serve --cluster`` end to end: a Ray head, two ``hangar node``s, two gateways on one throwaway PostgreSQL,
driven with boto3 and the ``hangar`` CLI. New sessions spread over the nodes; any gateway reaches any session's one
sandbox (the agent counts its calls); SSE streams through; a stop through the other gateway ends it; a node killed
with SIGKILL ends its sessions, whose ids then start afresh on the live node while the other node's sessions go on;
a drained node takes no new session."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import subprocess
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote

import boto3
import httpx
import pytest
import websockets
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.config import Config
from botocore.credentials import Credentials
from websockets.exceptions import ConnectionClosed

from tests.dataplane.support import BUCKET, deploy, wait_for, world_readable_dir
from tests.support.postgres import PostgresCluster
from tests.support.postgres import unavailable_reason as postgres_missing
from tests.support.ray_cluster import NodeProcess, RayCluster, ray_cluster  # noqa: F401 - the fixture
from tests.support.server import HANGAR_BIN, HangarServer, read_admin_key

AGENT = Path(__file__).parent / "agents" / "nodeecho"
SESSION_HEADER = "X-Amzn-Bedrock-AgentCore-Runtime-Session-Id"
pytestmark = pytest.mark.timeout(900)


@dataclass
class World:
    cluster: RayCluster
    gateways: list[HangarServer]
    nodes: list[NodeProcess]
    arn: str
    root: Path
    database_url: str

    def data(self, gateway: int) -> Any:
        """A bedrock-agentcore client of one gateway, with the admin key every gateway shares."""
        key_id, secret = read_admin_key(self.gateways[0].credentials_file)
        return boto3.client(
            "bedrock-agentcore",
            endpoint_url=self.gateways[gateway].url,
            region_name="us-west-2",
            aws_access_key_id=key_id,
            aws_secret_access_key=secret,
            config=Config(retries={"max_attempts": 1, "mode": "standard"}, read_timeout=300),
        )

    def invoke(self, gateway: int, session_id: str, payload: dict[str, Any] | None = None) -> dict[str, Any]:
        answer = self.data(gateway).invoke_agent_runtime(
            agentRuntimeArn=self.arn, runtimeSessionId=session_id, payload=json.dumps(payload or {}).encode()
        )
        return dict(json.loads(answer["response"].read()))

    def cli(self, gateway: int, *args: str) -> str:
        env = {key: value for key, value in os.environ.items() if not key.startswith(("AWS_", "HANGAR_"))}
        env.update(HANGAR_ENDPOINT_URL=self.gateways[gateway].url, HANGAR_DATA_DIR=str(self.gateways[0].data_dir))
        done = subprocess.run([str(HANGAR_BIN), *args], env=env, capture_output=True, text=True, timeout=120)
        assert done.returncode == 0, f"hangar {' '.join(args)}: {done.returncode}\n{done.stdout}\n{done.stderr}"
        return done.stdout

    def stop(self, *session_ids: str) -> None:
        """End sessions a test is done with (the nodes' slots and memory are shared by the module)."""
        for sid in session_ids:
            self.data(1).stop_runtime_session(agentRuntimeArn=self.arn, runtimeSessionId=sid)

    def sessions(self, gateway: int) -> list[dict[str, Any]]:
        return list(json.loads(self.cli(gateway, "sessions", "list", "--all", "-o", "json")))

    def node_of(self, session_id: str, gateway: int = 0) -> str | None:
        for entry in self.sessions(gateway):
            if entry["runtimeSessionId"] == session_id and entry["state"] != "Terminated":
                return str(entry["node"])
        return None


@pytest.fixture(scope="module")
def world(ray_cluster: RayCluster) -> Iterator[World]:  # noqa: F811 - the imported fixture
    reason = postgres_missing()
    if reason is not None:
        pytest.skip(reason)
    postgres = PostgresCluster.start()  # after the cluster: inside its network namespace, with the nodes
    gateways: list[HangarServer] = []
    try:
        with world_readable_dir("hangar-gateways-") as root:
            shutil.copytree(AGENT, root / "artifacts" / BUCKET / "nodeecho")
            env = {  # one installation: one store, one artifact store (either gateway's worker may build)
                "HANGAR_DATABASE_URL": postgres.new_database(),
                "HANGAR_ARTIFACTS_DIR": str(root / "artifacts"),
                "HANGAR_CLUSTER": "1",
            }
            gateways.append(HangarServer(data_dir=root / "gw1", env=env).start())
            # Gateways of one installation share its vault key and admin credentials (docs/cluster.md).
            (root / "gw2").mkdir()
            for name in ("vault.key", "credentials"):
                shutil.copy2(root / "gw1" / name, root / "gw2" / name)
            gateways.append(HangarServer(data_dir=root / "gw2", env=env).start())
            runtime = deploy(gateways[0].boto3_client("bedrock-agentcore-control"), "nodeecho")
            nodes = [
                ray_cluster.start_node(
                    root / f"node{i}",
                    database_url=env["HANGAR_DATABASE_URL"],
                    gateway=gateways[0].url,
                    name=f"node{i}-{uuid.uuid4().hex[:4]}",
                    slots=12,
                    env={"AWS_SHARED_CREDENTIALS_FILE": str(gateways[0].credentials_file)},
                )
                for i in (1, 2)
            ]
            world = World(ray_cluster, gateways, nodes, runtime["agentRuntimeArn"], root, env["HANGAR_DATABASE_URL"])
            wait_for(lambda: len(json.loads(world.cli(0, "nodes", "list", "-o", "json"))) == 2, timeout=60)
            yield world
    finally:
        for gateway in gateways:
            gateway.stop()
        postgres.stop()


def new_id() -> str:
    return f"cluster-{uuid.uuid4()}"


def test_both_nodes_listed_through_either_gateway(world: World) -> None:
    for gateway in (0, 1):
        listed = json.loads(world.cli(gateway, "nodes", "list", "-o", "json"))
        assert sorted(n["name"] for n in listed) == sorted(n.name for n in world.nodes)
        assert all(n["healthy"] and not n["draining"] and n["capacity"] == 12 for n in listed)
    assert sorted(world.cli(1, "nodes", "list", "-q").split()) == sorted(n.name for n in world.nodes)


def test_new_sessions_spread_and_any_gateway_reaches_the_same_sandbox(world: World) -> None:
    ids = [new_id() for _ in range(6)]
    first = [world.invoke(i % 2, sid) for i, sid in enumerate(ids)]
    assert [answer["count"] for answer in first] == [1] * len(ids)
    placed = {sid: world.node_of(sid) for sid in ids}
    assert set(placed.values()) == {n.name for n in world.nodes}, placed
    for sid in ids:  # later calls through either gateway reach the same sandbox, which counts on
        second, third = world.invoke(1, sid), world.invoke(0, sid)
        assert (second["count"], third["count"]) == (2, 3)
        assert second["pid"] == third["pid"] and second["session"] == sid
    assert {sid: world.node_of(sid, gateway=1) for sid in ids} == placed
    world.stop(*ids)


def test_sse_streams_through_the_gateway(world: World) -> None:
    sid = new_id()
    answer = world.data(1).invoke_agent_runtime(
        agentRuntimeArn=world.arn, runtimeSessionId=sid, payload=json.dumps({"action": "stream"}).encode()
    )
    assert answer["contentType"].startswith("text/event-stream")
    events = [line for line in answer["response"].iter_lines() if line.startswith(b"data:")]
    assert [json.loads(line[5:]) for line in events] == [{"index": 0}, {"index": 1}, {"index": 2}]
    world.stop(sid)


def test_a_large_payload_streams_through_to_the_agent(world: World) -> None:
    """30 MB: spooled by the gateway, streamed to the node (chunked), parsed whole by the agent."""
    sid = new_id()
    assert world.invoke(1, sid, {"pad": "x" * (30 << 20)})["count"] == 1
    world.stop(sid)


def test_stop_through_the_other_gateway(world: World) -> None:
    sid = new_id()
    assert world.invoke(0, sid)["count"] == 1
    world.data(1).stop_runtime_session(agentRuntimeArn=world.arn, runtimeSessionId=sid)
    assert world.node_of(sid) is None
    assert world.invoke(0, sid)["count"] == 1, "a stopped session's id starts a fresh sandbox"
    world.stop(sid)


def test_commands_and_websockets_reach_the_sessions_sandbox(world: World) -> None:
    sid = new_id()
    pid = world.invoke(0, sid)["pid"]
    answer = world.data(1).invoke_agent_runtime_command(
        agentRuntimeArn=world.arn, runtimeSessionId=sid, body={"command": "echo out; echo err >&2; exit 3"}
    )
    chunks = [event["chunk"] for event in answer["stream"]]
    assert "".join(c["contentDelta"].get("stdout", "") for c in chunks if "contentDelta" in c) == "out\n"
    assert "".join(c["contentDelta"].get("stderr", "") for c in chunks if "contentDelta" in c) == "err\n"
    assert chunks[-1] == {"contentStop": {"exitCode": 3, "status": "COMPLETED"}}

    url = f"ws://127.0.0.1:{world.gateways[1].port}/runtimes/{quote(world.arn, safe='')}/ws"
    key_id, secret = read_admin_key(world.gateways[0].credentials_file)
    signing = AWSRequest(method="GET", url=url.replace("ws://", "http://"), headers={SESSION_HEADER: sid})
    SigV4Auth(Credentials(key_id, secret), "bedrock-agentcore", "us-west-2").add_auth(signing)
    headers = {k: v for k, v in signing.headers.items() if k.lower() != "host"}

    async def talk() -> tuple[str, bytes, int | None]:
        async with websockets.connect(url, additional_headers=headers) as ws:
            await ws.send("hi")
            text = await ws.recv()
            await ws.send(b"abc")
            data = await ws.recv()
            await ws.send("bye")
            with pytest.raises(ConnectionClosed):
                await ws.recv()
            return str(text), bytes(data), ws.close_code

    assert asyncio.run(talk()) == (f"{sid}: hi", b"cba", 4000)
    assert world.invoke(1, sid) == {"count": 2, "pid": pid, "session": sid}, "all through the one sandbox"
    world.stop(sid)


def test_a_session_ended_on_its_node_loses_its_binding(world: World) -> None:
    """The node ends a session by itself (here: stopped on the node API directly, as an idle timeout would):
    the gateways' watch drops its binding, so the table stays the set of live sessions."""
    from hangar.cluster import node_auth, ray_link
    from hangar.store import placements
    from hangar.store.engine import create_store_engine
    from hangar.store.transactions import Store

    sid = new_id()
    world.invoke(0, sid)
    node = next(n for n in world.nodes if n.name == world.node_of(sid))
    runtime_id = world.arn.rsplit("/", 1)[-1]
    store = Store(create_store_engine(world.database_url))
    try:
        assert store.read(lambda c: placements.node_of(c, runtime_id, sid)) == node.name
        ray_link.connect()
        path = f"/node/v1/sessions/{runtime_id}/{sid}"
        signature = node_auth.sign(ray_link.cluster_key(), "DELETE", path)
        stopped = httpx.delete(node.url + path, headers={node_auth.HEADER: signature}, timeout=60)
        assert stopped.json() == {"stopped": True}
        wait_for(lambda: store.read(lambda c: placements.node_of(c, runtime_id, sid)) is None, timeout=30)
    finally:
        store.engine.dispose()
    assert world.invoke(1, sid)["count"] == 1, "its next call starts it afresh"
    world.stop(sid)


def test_a_killed_node_ends_its_sessions_and_their_ids_start_afresh(world: World) -> None:
    ids = [new_id() for _ in range(4)]
    for sid in ids:
        world.invoke(0, sid)
    placed = {sid: world.node_of(sid) for sid in ids}
    victim = next(n for n in world.nodes if n.name in placed.values())
    survivors = [sid for sid, node in placed.items() if node != victim.name]
    lost = [sid for sid, node in placed.items() if node == victim.name]
    victim.kill()

    def ended() -> bool:
        entries = {e["runtimeSessionId"]: e for e in world.sessions(1) if e["runtimeSessionId"] in lost}
        return len(entries) == len(lost) and all(e["state"] == "Terminated" for e in entries.values())

    wait_for(ended, timeout=30, interval=0.5)
    listed = json.loads(world.cli(0, "nodes", "list", "-o", "json"))
    assert victim.name not in [n["name"] for n in listed]
    for sid in lost:
        assert world.invoke(1, sid)["count"] == 1, "placed afresh on the live node"
        assert world.node_of(sid) != victim.name
    for sid in survivors:
        assert world.invoke(0, sid)["count"] == 2, "the other node's sessions are undisturbed"
    world.stop(*ids)
    world.cluster.restart_node(victim)
    wait_for(lambda: len(json.loads(world.cli(0, "nodes", "list", "-o", "json"))) == 2, timeout=60)


def test_a_drained_node_takes_no_new_session(world: World) -> None:
    drained, other = world.nodes
    kept = new_id()
    while world.invoke(0, kept) and world.node_of(kept) != drained.name:  # one session on the node to drain
        kept = new_id()
    world.cli(1, "nodes", "drain", drained.name)
    listed = {n["name"]: n for n in json.loads(world.cli(0, "nodes", "list", "-o", "json"))}
    assert listed[drained.name]["draining"] and not listed[other.name]["draining"]
    for _ in range(4):
        sid = new_id()
        world.invoke(1, sid)
        assert world.node_of(sid) == other.name
    assert world.invoke(0, kept)["count"] == 2, "a draining node still serves its sessions"
    metrics = httpx.get(f"{world.gateways[0].url}/metrics", timeout=10).text
    assert f'hangar_cluster_node_up{{node="{drained.name}"}} 0.0' in metrics
