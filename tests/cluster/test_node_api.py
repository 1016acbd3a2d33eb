"""``hangar node`` end to end: a Ray head, one real node, one real ``hangar serve`` on a throwaway PostgreSQL (the
shared store and the artifact source), the node API driven directly with httpx, signed with the cluster key."""

from __future__ import annotations

import json
import os
import shutil
import signal
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.dataplane.support import BUCKET, deploy, wait_for, world_readable_dir
from tests.support import residue
from tests.support.postgres import PostgresCluster
from tests.support.postgres import unavailable_reason as postgres_missing
from tests.support.ray_cluster import NodeProcess, RayCluster, ray_cluster  # noqa: F401 - the fixture
from tests.support.server import HangarServer

AGENT = Path(__file__).parent / "agents" / "nodeecho"
pytestmark = pytest.mark.timeout(900)


@dataclass
class World:
    cluster: RayCluster
    server: HangarServer
    node: NodeProcess
    key: bytes
    runtime_id: str


@pytest.fixture(scope="module")
def world(ray_cluster: RayCluster) -> Iterator[World]:  # noqa: F811 - the imported fixture
    reason = postgres_missing()
    if reason is not None:
        pytest.skip(reason)
    postgres = PostgresCluster.start()  # after the cluster: in its network namespace, where the node is
    try:
        with world_readable_dir("hangar-cluster-") as root:
            shutil.copytree(AGENT, root / "gw" / "artifacts" / BUCKET / "nodeecho")
            url = postgres.new_database()
            server = HangarServer(data_dir=root / "gw", env={"HANGAR_DATABASE_URL": url}).start()
            try:
                runtime = deploy(server.boto3_client("bedrock-agentcore-control"), "nodeecho")
                node = ray_cluster.start_node(
                    root / "node",
                    database_url=url,
                    gateway=server.url,
                    name=f"n-{uuid.uuid4().hex[:6]}",
                    slots=12,
                    env={"AWS_SHARED_CREDENTIALS_FILE": str(server.credentials_file)},
                )
                from hangar.cluster import ray_link

                ray_link.connect()
                yield World(ray_cluster, server, node, ray_link.cluster_key(), runtime["agentRuntimeId"])
            finally:
                server.stop()
    finally:
        postgres.stop()


def _path(world: World, session_id: str, tail: str = "") -> str:
    return f"/node/v1/sessions/{world.runtime_id}/{session_id}{tail}"


def call(
    world: World,
    method: str,
    path: str,
    *,
    body: bytes | Iterator[bytes] = b"",
    headers: dict[str, str] | None = None,
    auth: str | None = None,
) -> httpx.Response:
    from hangar.cluster import node_auth

    sent = dict(headers or {})
    sent[node_auth.HEADER] = auth if auth is not None else node_auth.sign(world.key, method, path)
    return httpx.request(method, world.node.url + path, content=body, headers=sent, timeout=300)


def agent_headers(world: World, session_id: str) -> dict[str, str]:
    from hangar.cluster.node_versions import encode_target

    return {
        "X-Hangar-Target": encode_target(world.runtime_id, "DEFAULT", 1),
        "X-Hangar-Agent-Method": "POST",
        "X-Hangar-Agent-Path": "/invocations",
        "X-Hangar-H-Content-Type": "application/json",
        "X-Hangar-H-X-Amzn-Bedrock-AgentCore-Runtime-Session-Id": session_id,
    }


def invoke(world: World, session_id: str, payload: dict[str, Any] | None = None) -> httpx.Response:
    body = json.dumps(payload or {}).encode()
    headers = agent_headers(world, session_id)
    return call(world, "POST", _path(world, session_id, "/request"), body=body, headers=headers)


def node_sessions(world: World) -> list[dict[str, Any]]:
    response = call(world, "GET", "/node/v1/sessions")
    assert response.status_code == 200, response.text
    return list(response.json()["sessions"])


def live(world: World, session_id: str) -> bool:
    return any(s["runtimeSessionId"] == session_id and s["state"] != "Terminated" for s in node_sessions(world))


def describe(world: World) -> dict[str, Any]:
    import ray

    actor = ray.get_actor(f"node:{world.node.name}", namespace="hangar")
    return dict(ray.get(actor.describe.remote(), timeout=30))


def test_a_session_starts_and_a_second_call_reaches_the_same_sandbox(world: World) -> None:
    session_id = f"s-{uuid.uuid4()}"
    first = invoke(world, session_id)
    assert first.status_code == 200, first.text
    assert "x-hangar-node-error" not in first.headers
    second = invoke(world, session_id)
    assert second.status_code == 200, second.text
    assert (first.json()["count"], second.json()["count"]) == (1, 2)
    assert first.json()["pid"] == second.json()["pid"]
    assert second.json()["session"] == session_id
    assert live(world, session_id)


def test_a_streamed_answer_arrives_in_pieces(world: World) -> None:
    from hangar.cluster import node_auth

    session_id = f"s-{uuid.uuid4()}"
    path = _path(world, session_id, "/request")
    headers = {**agent_headers(world, session_id), node_auth.HEADER: node_auth.sign(world.key, "POST", path)}
    pieces: list[bytes] = []
    body = json.dumps({"action": "stream", "count": 4}).encode()
    with httpx.stream("POST", world.node.url + path, content=body, headers=headers, timeout=300) as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        pieces.extend(piece for piece in response.iter_raw() if piece)
    text = b"".join(pieces).decode()
    assert [json.loads(line[len("data: ") :])["index"] for line in text.split("\n") if line] == [0, 1, 2, 3]
    assert len(pieces) >= 2, "the events came as one buffered piece"


def test_a_large_body_of_unknown_length_streams_to_the_agent(world: World) -> None:
    """No Content-Length: the node sends the body on to the agent chunked, as it arrives."""
    size = 24 * 1024 * 1024
    head, tail = b'{"action": "size", "data": "', b'"}'

    def body() -> Iterator[bytes]:
        yield head
        for _ in range(size // (1024 * 1024)):
            yield b"x" * (1024 * 1024)
        yield tail

    session_id = f"s-{uuid.uuid4()}"
    response = call(
        world, "POST", _path(world, session_id, "/request"), headers=agent_headers(world, session_id), body=body()
    )
    assert response.status_code == 200, response.text
    assert response.json() == {"size": size}


@pytest.mark.parametrize("case", ["missing", "wrong", "stale", "other-path"])
def test_an_unsigned_or_badly_signed_request_is_refused_and_starts_nothing(world: World, case: str) -> None:
    from hangar.cluster import node_auth

    session_id = f"s-{uuid.uuid4()}"
    path = _path(world, session_id, "/request")
    auth = {
        "missing": "",
        "wrong": node_auth.sign(os.urandom(32), "POST", path),
        "stale": node_auth.sign(world.key, "POST", path, now=time.time() - 600),
        "other-path": node_auth.sign(world.key, "POST", "/node/v1/sessions"),
    }[case]
    response = call(world, "POST", path, body=b"{}", headers=agent_headers(world, session_id), auth=auth)
    assert response.status_code == 401, response.text
    assert response.headers["x-hangar-node-error"] == "UnauthorizedException"
    assert not any(s["runtimeSessionId"] == session_id for s in node_sessions(world))


def test_describe_shows_the_sessions_and_the_slots(world: World) -> None:
    session_id = f"s-{uuid.uuid4()}"
    assert invoke(world, session_id).status_code == 200
    wanted = len([s for s in node_sessions(world) if s["state"] != "Terminated"])
    doc = wait_for(lambda: (d := describe(world))["sessions"] == wanted and d, timeout=30)
    assert doc["name"] == world.node.name
    assert doc["address"] == world.node.url
    assert doc["capacity"] == 12
    assert doc["healthy"] is True and doc["draining"] is False
    assert doc["memoryBytes"] > 0
    # the version served here gets a warm template on this node, and says so (placement prefers such nodes)
    wait_for(lambda: f"{world.runtime_id}:1" in describe(world)["templates"], timeout=120)


def test_stop_ends_the_session(world: World) -> None:
    session_id = f"s-{uuid.uuid4()}"
    assert invoke(world, session_id).status_code == 200
    stopped = call(world, "DELETE", _path(world, session_id))
    assert stopped.status_code == 200 and stopped.json() == {"stopped": True}
    assert not live(world, session_id)
    again = call(world, "DELETE", _path(world, session_id))
    assert again.json() == {"stopped": False}


def test_exec_streams_a_command_in_a_session_it_may_start(world: World) -> None:
    import base64

    session_id = f"s-{uuid.uuid4()}"
    headers = {**agent_headers(world, session_id), "Content-Type": "application/json"}
    body = json.dumps({"command": "echo out; echo err >&2; exit 3", "timeout": 30}).encode()
    response = call(world, "POST", _path(world, session_id, "/exec"), body=body, headers=headers)
    assert response.status_code == 200, response.text
    events = [json.loads(line) for line in response.text.splitlines()]
    out = b"".join(base64.b64decode(e["data"]) for e in events if e["kind"] == "stdout")
    err = b"".join(base64.b64decode(e["data"]) for e in events if e["kind"] == "stderr")
    assert (out, err) == (b"out\n", b"err\n")
    assert events[-1] == {"kind": "exit", "exitCode": 3, "timedOut": False}
    assert live(world, session_id)  # the command was the session's first call
    assert invoke(world, session_id).json()["count"] == 1


def test_a_websocket_is_relayed_both_ways_and_needs_the_signature(world: World) -> None:
    from websockets.exceptions import ConnectionClosed, InvalidStatus
    from websockets.sync.client import connect

    from hangar.cluster import node_auth

    session_id = f"s-{uuid.uuid4()}"
    path = _path(world, session_id, "/ws")
    uri = world.node.url.replace("http://", "ws://") + path
    wanted = ("X-Hangar-Target", "X-Hangar-H-X-Amzn-Bedrock-AgentCore-Runtime-Session-Id")
    target = {k: v for k, v in agent_headers(world, session_id).items() if k in wanted}
    bad = {**target, node_auth.HEADER: "0:" + "0" * 64}
    with pytest.raises((InvalidStatus, ConnectionClosed)), connect(uri, additional_headers=bad) as refused:
        refused.recv(timeout=30)
    assert not any(s["runtimeSessionId"] == session_id for s in node_sessions(world))
    signed = {**target, node_auth.HEADER: node_auth.sign(world.key, "GET", path)}
    with connect(uri, additional_headers=signed, open_timeout=300) as ws:
        ws.send("hello")
        assert ws.recv(timeout=30) == f"{session_id}: hello"
        ws.send(b"\x01\x02\x03")
        assert ws.recv(timeout=30) == b"\x03\x02\x01"
        ws.send("bye")
        with pytest.raises(ConnectionClosed) as closed:
            ws.recv(timeout=30)
    assert closed.value.rcvd is not None and closed.value.rcvd.code == 4000
    assert live(world, session_id)


def test_drain_refuses_new_sessions_and_keeps_the_old_ones(world: World) -> None:
    import ray

    old = f"s-{uuid.uuid4()}"
    assert invoke(world, old).status_code == 200
    actor = ray.get_actor(f"node:{world.node.name}", namespace="hangar")
    ray.get(actor.drain.remote(), timeout=30)
    assert describe(world)["draining"] is True
    wait_for(lambda: call(world, "GET", "/node/v1/health").json()["draining"], timeout=30)
    new = f"s-{uuid.uuid4()}"
    refused = invoke(world, new)
    assert refused.status_code == 409, refused.text
    assert refused.headers["x-hangar-node-error"] == "NodeDraining"
    assert not any(s["runtimeSessionId"] == new for s in node_sessions(world))
    kept = invoke(world, old)
    assert kept.status_code == 200 and kept.json()["count"] == 2


def test_a_restarted_node_cleans_up_what_its_killed_process_left(world: World) -> None:
    """Runs last: it kills the node (kill -9), so its sandboxes outlive it, and starts it again. The sessions of
    the tests above are still live (the node drains now, so it takes no new one)."""
    left = [s["runtimeSessionId"] for s in node_sessions(world) if s["state"] != "Terminated"]
    assert left
    session_id = left[0]
    before = residue.snapshot(world.node.data_dir)
    assert before.ids, "the live sessions' sandboxes should be visible on the host"
    world.node.stop(signal.SIGKILL)
    assert residue.residue(before, world.node.data_dir), "a killed node cannot have cleaned up"
    world.cluster.restart_node(world.node, timeout=180)
    assert residue.settled(before, world.node.data_dir, timeout=60) == []
    assert not live(world, session_id)
    fresh = invoke(world, session_id)  # the restarted node is a new actor: not draining
    assert fresh.status_code == 200 and fresh.json()["count"] == 1


def test_sigterm_stops_the_node_cleanly(world: World) -> None:
    """After the restart above: SIGTERM ends every session, stops their sandboxes and exits 0."""
    assert invoke(world, f"s-{uuid.uuid4()}").status_code == 200
    before = residue.snapshot(world.node.data_dir)
    assert before.ids
    assert world.node.stop(signal.SIGTERM, timeout=120) == 0, world.node.log()[-3000:]
    assert residue.settled(before, world.node.data_dir, timeout=60) == []
