"""Issue 16's faults on a cluster whose nodes are separate hosts: a Ray head and two gateways on one throwaway
PostgreSQL in one network namespace, each ``hangar node`` (with its own raylet) in a namespace of its own, joined to
the head's by a veth on a bridge (``RayCluster.start(hosts=True)``). A node killed with SIGKILL under load: its
sessions are Terminated within seconds, their ids start afresh on the live node, the other node's sessions never
fail. A gateway killed mid-stream: the client sees the stream break, the session goes on through the other gateway.
The killed node restarted: nothing of its old sandboxes remains and it takes new sessions."""

from __future__ import annotations

import json
import shutil
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import boto3
import httpx
import pytest
from botocore.config import Config

from tests.auth.signing import signed
from tests.dataplane.support import BUCKET, deploy, wait_for, world_readable_dir
from tests.support.postgres import PostgresCluster
from tests.support.postgres import unavailable_reason as postgres_missing
from tests.support.ray_cluster import HEAD_IP, NodeProcess, RayCluster, unavailable_reason, within
from tests.support.residue import Sandboxes, residue, settled, snapshot
from tests.support.server import HangarServer, read_admin_key

AGENT = Path(__file__).parent / "agents" / "nodeecho"
SESSION_HEADER = "X-Amzn-Bedrock-AgentCore-Runtime-Session-Id"
pytestmark = pytest.mark.timeout(900)


@dataclass
class Hosts:
    cluster: RayCluster
    gateways: list[HangarServer]
    nodes: list[NodeProcess]
    arn: str
    key: tuple[str, str]
    killed: dict[str, Any] = field(default_factory=dict)  # what the node-kill test leaves for the restart test

    def data(self, gateway: int) -> Any:
        return boto3.session.Session().client(  # a session per client: the load's threads make them at once
            "bedrock-agentcore",
            endpoint_url=self.gateways[gateway].url,
            region_name="us-west-2",
            aws_access_key_id=self.key[0],
            aws_secret_access_key=self.key[1],
            config=Config(retries={"max_attempts": 1, "mode": "standard"}, read_timeout=120),
        )

    def invoke(self, gateway: int, session_id: str, payload: dict[str, Any] | None = None) -> dict[str, Any]:
        answer = self.data(gateway).invoke_agent_runtime(
            agentRuntimeArn=self.arn, runtimeSessionId=session_id, payload=json.dumps(payload or {}).encode()
        )
        return dict(json.loads(answer["response"].read()))

    def listing(self, gateway: int) -> list[dict[str, Any]]:
        """``GET /hangar/sessions/`` of one gateway: every entry, live and ended."""
        request = signed("GET", f"{self.gateways[gateway].url}/hangar/sessions/", self.key)
        with httpx.Client(timeout=30) as client:
            answer = client.send(request)
        answer.raise_for_status()
        return list(answer.json()["sessions"])

    def sessions(self, gateway: int) -> dict[str, dict[str, Any]]:
        """The latest entry per session id (a live one before an ended one)."""
        found: dict[str, dict[str, Any]] = {}
        for entry in self.listing(gateway):
            sid = entry["runtimeSessionId"]
            if sid not in found or entry["state"] != "Terminated":
                found[sid] = entry
        return found

    def stop(self, *session_ids: str) -> None:
        for sid in session_ids:
            self.data(0).stop_runtime_session(agentRuntimeArn=self.arn, runtimeSessionId=sid)


@pytest.fixture(scope="module")
def hosts() -> Iterator[Hosts]:
    reason = unavailable_reason() or postgres_missing()
    if reason is not None:
        pytest.skip(reason)
    cluster = RayCluster.start(hosts=True)
    gateways: list[HangarServer] = []
    postgres: PostgresCluster | None = None
    try:
        postgres = PostgresCluster.start()  # in the head's namespace; the nodes reach it through its Unix socket
        with world_readable_dir("hangar-hosts-") as root:
            shutil.copytree(AGENT, root / "artifacts" / BUCKET / "nodeecho")
            url = postgres.new_database()
            database = url.rsplit("/", 1)[1]
            node_url = f"postgresql+psycopg://postgres@/{database}?host={postgres.socket_dir}&port={postgres.port}"
            env = {"HANGAR_DATABASE_URL": url, "HANGAR_ARTIFACTS_DIR": str(root / "artifacts"), "HANGAR_CLUSTER": "1"}
            listen = ["--host", "0.0.0.0"]  # the last --host wins: the nodes reach the gateways over the bridge
            gateways.append(HangarServer(data_dir=root / "gw1", env=env, extra_args=listen).start())
            (root / "gw2").mkdir()
            for name in ("vault.key", "credentials"):
                shutil.copy2(root / "gw1" / name, root / "gw2" / name)
            gateways.append(HangarServer(data_dir=root / "gw2", env=env, extra_args=listen).start())
            runtime = deploy(gateways[0].boto3_client("bedrock-agentcore-control"), "nodeecho")
            nodes = [
                cluster.start_node(
                    root / f"host{i}",
                    database_url=node_url,
                    gateway=cluster.gateway_url(gateways[0]),
                    name=f"host{i}-{uuid.uuid4().hex[:4]}",
                    slots=12,
                    env={"AWS_SHARED_CREDENTIALS_FILE": str(gateways[0].credentials_file)},
                )
                for i in (1, 2)
            ]
            world = Hosts(
                cluster, gateways, nodes, runtime["agentRuntimeArn"], read_admin_key(gateways[0].credentials_file)
            )
            wait_for(lambda: all(len(listed_nodes(world, g)) == 2 for g in (0, 1)), timeout=90)
            yield world
    finally:
        for gateway in gateways:
            gateway.stop()
        if postgres is not None:
            postgres.stop()
        cluster.stop()


def listed_nodes(world: Hosts, gateway: int = 0) -> dict[str, dict[str, Any]]:
    request = signed("GET", f"{world.gateways[gateway].url}/hangar/nodes/", world.key)
    with httpx.Client(timeout=30) as client:
        return {n["name"]: n for n in client.send(request).json()["nodes"]}


def new_id() -> str:
    return f"hosts-{uuid.uuid4()}"


def place_on_both(world: Hosts, per_node: int, gateways: tuple[int, ...] = (0, 1)) -> dict[str, list[str]]:
    """New sessions until each node runs ``per_node`` of them: {node name: [session ids]}."""
    placed: dict[str, list[str]] = {n.name: [] for n in world.nodes}
    for attempt in range(6 * per_node):
        sid = new_id()
        assert world.invoke(gateways[attempt % len(gateways)], sid)["count"] == 1
        placed[world.sessions(0)[sid]["node"]].append(sid)
        if all(len(ids) >= per_node for ids in placed.values()):
            return placed
    raise AssertionError(f"sessions did not spread over both nodes: {placed}\n{cluster_view(world)}")


def cluster_view(world: Hosts) -> str:
    """What a failure needs to be understood: each gateway's view of the nodes and the end of each node's log."""
    lines = []
    for gateway in range(len(world.gateways)):
        try:
            lines.append(f"gateway {gateway} sees: {json.dumps(listed_nodes(world, gateway))}")
        except Exception as exc:
            lines.append(f"gateway {gateway}: {exc!r}")
    for node in world.nodes:
        lines.append(f"--- node {node.name}'s log (end):\n" + "\n".join(node.log().splitlines()[-40:]))
    return "\n".join(lines)


def test_nodes_are_separate_hosts(hosts: Hosts) -> None:
    """Each node is its own Ray node with its own address, and the gateways reach its API at that address."""
    from hangar.cluster import ray_link

    ray_link.connect()
    ray = ray_link.ray_module()
    alive = {n["NodeManagerAddress"] for n in ray.nodes() if n["Alive"]}
    assert alive == {HEAD_IP, *(n.host for n in hosts.nodes)}
    assert len({n.host for n in hosts.nodes}) == 2 and HEAD_IP not in {n.host for n in hosts.nodes}
    wait_for(lambda: len(listed_nodes(hosts, 1)) == 2, timeout=30)
    listed = listed_nodes(hosts, 1)
    assert {listed[n.name]["address"] for n in hosts.nodes} == {n.url for n in hosts.nodes}
    for node in hosts.nodes:  # only the link reaches it: nothing listens on the head's loopback for it
        with pytest.raises(httpx.ConnectError):
            httpx.get(f"http://127.0.0.1:{node.port}/node/v1/health", timeout=2)


def test_a_node_killed_under_load(hosts: Hosts) -> None:
    placed = place_on_both(hosts, 3)
    victim, survivor = hosts.nodes[0], hosts.nodes[1]
    lost, kept = placed[victim.name], placed[survivor.name]
    counts = {sid: 1 for sid in kept}
    failures: list[str] = []
    done, killed = threading.Event(), threading.Event()
    late: dict[str, dict[str, Any]] = {}

    def load(sids: list[str], gateway: int) -> None:
        while not done.is_set():
            for sid in sids:
                try:
                    answer = hosts.invoke(gateway, sid)
                except Exception as exc:
                    failures.append(f"{sid} via gateway {gateway}: {exc!r}")
                    continue
                counts[sid] += 1
                if answer["count"] != counts[sid]:
                    failures.append(f"{sid}: count {answer['count']}, expected {counts[sid]} (a new sandbox)")
                    counts[sid] = answer["count"]

    def doomed() -> None:  # calls on the victim's sessions until the kill (their failures are expected)
        while not killed.is_set():
            for sid in lost:
                if killed.is_set():  # a call after the kill would place the session afresh
                    return
                try:
                    answer = hosts.invoke(1, sid)
                    if killed.is_set():  # answered after the kill: by the old sandbox, or already a fresh one
                        late[sid] = answer
                except Exception:
                    continue

    threads = [threading.Thread(target=load, args=([sid], i % 2)) for i, sid in enumerate(kept)]
    threads.append(threading.Thread(target=doomed))
    for thread in threads:
        thread.start()
    try:
        wait_for(lambda: all(c >= 3 for c in counts.values()), timeout=120, interval=0.2)
        hosts.killed["before"] = within(victim.netns or "", lambda: snapshot(victim.data_dir))
        assert hosts.killed["before"].ids, "the victim had sandboxes"
        victim.kill()
        started = time.monotonic()
        killed.set()

        def ended(gateway: int) -> bool:  # a call in flight at the kill may start one afresh meanwhile: not this one
            gone = {e["runtimeSessionId"] for e in hosts.listing(gateway) if e["state"] == "Terminated" and dead(e)}
            return gone >= set(lost)

        def dead(entry: dict[str, Any]) -> bool:
            return entry.get("node") == victim.name or victim.name in str(entry.get("endReason"))

        try:
            wait_for(lambda: ended(0), timeout=30, interval=0.1)
        except AssertionError:
            raise AssertionError([e for e in hosts.listing(0) if e["runtimeSessionId"] in lost]) from None
        detected = time.monotonic() - started
        try:
            wait_for(lambda: ended(1), timeout=30, interval=0.1)
        except AssertionError:
            raise AssertionError([e for e in hosts.listing(1) if e["runtimeSessionId"] in lost]) from None
        print(f"node {victim.name} killed: its sessions Terminated after {detected:.1f} s")
        hosts.killed["detected_s"] = detected
        assert victim.name not in listed_nodes(hosts, 1)
        settle = {sid: counts[sid] for sid in kept}
        wait_for(lambda: all(counts[sid] >= settle[sid] + 2 for sid in kept), timeout=120, interval=0.2)
    finally:
        done.set()
        killed.set()
        for thread in threads:
            thread.join()
    assert failures == [], "the live node's sessions kept answering"
    for sid in lost:  # a call in flight at the kill may have been the one that started it afresh
        try:
            answer = hosts.invoke(0, sid)
        except Exception as exc:
            raise AssertionError(
                f"{sid} did not start afresh on {survivor.name}: {exc!r}\n{cluster_view(hosts)}"
            ) from exc
        fresh = late.get(sid, {}).get("count") == 1
        assert answer["count"] == (2 if fresh else 1), f"a fresh sandbox on the live node: {answer}, {late}"
        assert hosts.sessions(1)[sid]["node"] == survivor.name
    for sid in kept:
        assert hosts.invoke(1, sid)["count"] == counts[sid] + 1
    hosts.stop(*lost, *kept)


def test_the_killed_node_restarted_cleans_its_orphans(hosts: Hosts) -> None:
    victim = hosts.nodes[0]
    before: Sandboxes | None = hosts.killed.get("before")
    if before is None:
        pytest.fail("runs after test_a_node_killed_under_load (its killed node)")
    assert victim.process.poll() is not None
    assert within(victim.netns or "", lambda: residue(before, victim.data_dir)), "a SIGKILL leaves sandboxes behind"
    hosts.cluster.restart_node(victim)
    assert within(victim.netns or "", lambda: settled(before, victim.data_dir, timeout=60)) == []
    wait_for(lambda: all(victim.name in listed_nodes(hosts, g) for g in (0, 1)), timeout=90)
    taken: list[str] = []
    while len(taken) < 12:  # the other node has a warm template (worth 3 slots): after a few it is the restarted one
        sid = new_id()
        assert hosts.invoke(0, sid)["count"] == 1
        taken.append(sid)
        if hosts.sessions(0)[sid]["node"] == victim.name:
            break
    assert hosts.sessions(1)[taken[-1]]["node"] == victim.name, "the restarted node takes new sessions"
    hosts.stop(*taken)


def test_a_gateway_killed_mid_stream(hosts: Hosts) -> None:
    """The client reads the stream through gateway 2 with httpx (whose HTTP/1.1 parser says when a chunked body is
    cut short); the gateway is killed after two events."""
    sid = new_id()
    first = hosts.invoke(1, sid)
    arn = hosts.arn.replace(":", "%3A").replace("/", "%2F")
    body = json.dumps({"action": "stream", "count": 40}).encode()
    headers = {SESSION_HEADER: sid, "Content-Type": "application/json"}
    request = signed("POST", f"{hosts.gateways[1].url}/runtimes/{arn}/invocations", hosts.key, body, headers)
    events = []
    with httpx.Client(timeout=60) as client:
        answer = client.send(request, stream=True)
        assert answer.status_code == 200 and answer.headers["content-type"].startswith("text/event-stream")
        with pytest.raises(httpx.RemoteProtocolError, match="incomplete chunked read"):
            for line in answer.iter_lines():
                if line.startswith("data:"):
                    events.append(json.loads(line[5:]))
                    if len(events) == 2:
                        hosts.gateways[1].kill()
    assert 2 <= len(events) < 40, "the stream broke before its end"
    second = hosts.invoke(0, sid)
    assert (second["count"], second["pid"]) == (first["count"] + 1, first["pid"]), "the same sandbox goes on"
    hosts.stop(sid)


def test_a_host_cut_off_from_the_network(hosts: Hosts) -> None:
    """Its link down (no RST, no FIN: packets just stop): Ray's health check declares the node dead, its sessions
    end, and their ids start afresh on the other node; the other node's sessions go on."""
    placed = place_on_both(hosts, 2, gateways=(0,))  # the last test killed gateway 2
    cut, survivor = hosts.nodes[1], hosts.nodes[0]
    lost, kept = placed[cut.name], placed[survivor.name]
    hosts.cluster.cut_off(cut)
    started = time.monotonic()

    def ended() -> bool:
        gone = {e["runtimeSessionId"] for e in hosts.listing(0) if e["state"] == "Terminated"}
        return gone >= set(lost)

    wait_for(ended, timeout=30, interval=0.2)
    print(f"host {cut.name} cut off: its sessions Terminated after {time.monotonic() - started:.1f} s")
    for sid in kept:
        assert hosts.invoke(0, sid)["count"] == 2, "the other node's sessions go on"
    for sid in lost:
        assert hosts.invoke(0, sid)["count"] == 1, "a fresh sandbox on the node still connected"
        assert hosts.sessions(0)[sid]["node"] == survivor.name
    hosts.stop(*lost, *kept)
