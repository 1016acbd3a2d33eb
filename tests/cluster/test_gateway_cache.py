"""The gateway's in-memory session bindings (cluster/remote.py): a warm call reads no placement row, yet a binding
another gateway removed is never trusted; and session logs kept on the nodes, read through a gateway's CloudWatch
Logs API with the aws CLI. Two gateways, two nodes, one PostgreSQL (test_gateway.py's world)."""

from __future__ import annotations

import httpx

from hangar.cluster import node_auth, node_versions, ray_link
from hangar.observability import logs
from hangar.store import placements
from hangar.store.engine import create_store_engine
from hangar.store.transactions import Store
from tests.cluster.test_gateway import World, new_id, world  # noqa: F401 - the fixture
from tests.dataplane.support import wait_for
from tests.observability.test_logs import aws
from tests.support.ray_cluster import ray_cluster  # noqa: F401 - the fixture


def bound_node(world: World, session_id: str) -> str | None:  # noqa: F811 - the imported fixture's name
    """The session's row in the shared table (what every gateway falls back on)."""
    store = Store(create_store_engine(world.database_url))
    try:
        return store.read(lambda c: placements.node_of(c, world.arn.rsplit("/", 1)[-1], session_id))
    finally:
        store.engine.dispose()


def test_a_session_stopped_through_one_gateway_is_re_placed_through_the_other(world: World) -> None:  # noqa: F811
    sid = new_id()
    assert world.invoke(0, sid)["count"] == 1
    assert world.invoke(1, sid)["count"] == 2, "both gateways now remember where it runs"
    assert world.invoke(0, sid)["count"] == 3
    world.data(1).stop_runtime_session(agentRuntimeArn=world.arn, runtimeSessionId=sid)
    assert bound_node(world, sid) is None

    # Gateway 0 still remembers the old node: the node must refuse (not silently restart it without a binding).
    again = world.invoke(0, sid)
    assert again["count"] == 1, "a fresh sandbox"
    node = bound_node(world, sid)
    assert node is not None, "the fresh session is bound in the shared table"
    later = world.invoke(1, sid)
    assert later == {"count": 2, "pid": again["pid"], "session": sid}, "the other gateway reaches the same sandbox"
    assert world.node_of(sid, gateway=1) == node
    world.stop(sid)


def test_a_session_ended_on_its_node_starts_afresh_through_a_remembering_gateway(world: World) -> None:  # noqa: F811
    sid = new_id()
    world.invoke(0, sid)
    node = next(n for n in world.nodes if n.name == world.node_of(sid))
    runtime_id = world.arn.rsplit("/", 1)[-1]
    ray_link.connect()
    path = f"/node/v1/sessions/{runtime_id}/{sid}"
    stopped = httpx.delete(
        node.url + path, headers={node_auth.HEADER: node_auth.sign(ray_link.cluster_key(), "DELETE", path)}, timeout=60
    )
    assert stopped.json() == {"stopped": True}
    wait_for(lambda: bound_node(world, sid) is None, timeout=30)  # the watch's reconcile drops the row
    again = world.invoke(0, sid)
    assert again["count"] == 1, "a fresh sandbox"
    assert world.invoke(1, sid)["count"] == 2, "the other gateway reaches the same sandbox"
    world.stop(sid)


def test_the_node_refuses_an_unknown_session_to_a_caller_that_expects_one(world: World) -> None:  # noqa: F811
    """``X-Hangar-Existing``: 404 ``NotFound`` from the node itself, and nothing started there."""
    sid = new_id()
    runtime_id = world.arn.rsplit("/", 1)[-1]
    node = world.nodes[0]
    ray_link.connect()
    path = f"/node/v1/sessions/{runtime_id}/{sid}/request"
    headers = {
        node_auth.HEADER: node_auth.sign(ray_link.cluster_key(), "POST", path),
        "X-Hangar-Existing": "1",
        "X-Hangar-Target": node_versions.encode_target(runtime_id, "DEFAULT", 1),
        "X-Hangar-Agent-Method": "POST",
        "X-Hangar-Agent-Path": "/invocations",
        "X-Hangar-H-Content-Type": "application/json",
    }
    answer = httpx.post(node.url + path, headers=headers, content=b"{}", timeout=60)
    assert answer.status_code == 404
    assert answer.headers["X-Hangar-Node-Error"] == "NotFound"
    assert world.node_of(sid) is None and bound_node(world, sid) is None


def test_a_node_sessions_log_lines_through_the_gateways_logs_api(world: World) -> None:  # noqa: F811
    sid = new_id()
    marker = f"hello-{sid}"
    world.invoke(0, sid, {"say": marker})
    group = logs.group_name(world.arn.rsplit("/", 1)[-1], "DEFAULT")
    gateway = world.gateways[1]

    def logged() -> list[str]:
        found = aws(gateway, "filter-log-events", "--log-group-name", group, "--filter-pattern", marker)
        return [e["logStreamName"] for e in found["events"] if e["message"] == marker]

    wait_for(lambda: bool(logged()), timeout=30, interval=0.5)
    [stream] = logged()
    assert stream.endswith(logs.STREAM_KIND + sid), "the node's stream of that session"
    streams = aws(gateway, "describe-log-streams", "--log-group-name", group)["logStreams"]
    assert stream in [s["logStreamName"] for s in streams]
    got = aws(gateway, "get-log-events", "--log-group-name", group, "--log-stream-name", stream, "--start-from-head")
    assert marker in [e["message"] for e in got["events"]]
    groups = aws(gateway, "describe-log-groups")["logGroups"]
    assert group in [g["logGroupName"] for g in groups]
    world.stop(sid)
