"""Issue 16, a node that comes back: a host cut off from the network long enough for the gateways to take it for
dead, then reconnected, ends every sandbox it had (their ids live on the other node now) before it takes sessions
again; an SSE stream in flight to it when it went away ends with an error event and a cut chunked body.

Same world as test_faults.py (its ``hosts`` fixture: two gateways on one PostgreSQL, two ``hangar node``s on hosts
of their own); the link is the cut-off host's bridge port (``RayCluster.cut_off``), brought up again here."""

from __future__ import annotations

import json
import subprocess
import threading
import time
from typing import Any

import httpx
import pytest
from botocore.exceptions import ResponseStreamingError

from tests.auth.signing import signed
from tests.cluster.test_faults import SESSION_HEADER, Hosts, hosts, listed_nodes, new_id, place_on_both
from tests.dataplane.support import wait_for
from tests.support.ray_cluster import NodeProcess, within
from tests.support.residue import Sandboxes, settled, snapshot

__all__ = ["hosts"]  # the module-scoped fixture, shared with test_faults.py's setup (a world of its own here)
pytestmark = pytest.mark.timeout(900)


def reconnect(world: Hosts, node: NodeProcess) -> None:
    """Bring the cut-off host's link back up (the reverse of ``RayCluster.cut_off``)."""
    assert node.netns is not None
    port = f"hv{node.netns.rsplit('-h', 1)[1]}"
    subprocess.run(["ip", "-n", world.cluster.netns, "link", "set", port, "up"], check=True, capture_output=True)


def sandboxes_of(node: NodeProcess, sandbox_ids: set[str]) -> Sandboxes:
    """Those sandboxes as the node's host sees them (with the uids they lease)."""
    found = within(node.netns or "", lambda: snapshot(node.data_dir))
    assert sandbox_ids <= found.ids, f"the node runs them: {sandbox_ids - found.ids} missing"
    return Sandboxes(ids=set(sandbox_ids), uids=set())


class Stream:
    """An SSE answer read by httpx in a thread: its events and how it ended."""

    def __init__(self, world: Hosts, gateway: int, session_id: str, count: int) -> None:
        arn = world.arn.replace(":", "%3A").replace("/", "%2F")
        body = json.dumps({"action": "stream", "count": count}).encode()
        headers = {SESSION_HEADER: session_id, "Content-Type": "application/json"}
        self.request = signed(
            "POST", f"{world.gateways[gateway].url}/runtimes/{arn}/invocations", world.key, body, headers
        )
        self.events: list[dict[str, Any]] = []
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._read)
        self.thread.start()

    def _read(self) -> None:
        try:
            with (
                httpx.Client(timeout=httpx.Timeout(10, read=120)) as client,
                client.stream(
                    "POST", self.request.url, headers=self.request.headers, content=self.request.content
                ) as answer,
            ):
                assert answer.status_code == 200
                for line in answer.iter_lines():
                    if line.startswith("data:"):
                        self.events.append(json.loads(line[5:]))
        except BaseException as exc:
            self.error = exc


def live_on(world: Hosts, node: str, session_ids: set[str]) -> list[dict[str, Any]]:
    return [
        e
        for e in world.listing(0)
        if e.get("node") == node and e["state"] != "Terminated" and e["runtimeSessionId"] in session_ids
    ]


def test_a_cut_off_host_that_comes_back_ends_its_old_sandboxes(hosts: Hosts) -> None:
    placed = place_on_both(hosts, 2)
    cut, survivor = hosts.nodes[1], hosts.nodes[0]
    lost, kept = placed[cut.name], placed[survivor.name]
    entries = {e["runtimeSessionId"]: e for e in hosts.listing(0) if e["state"] != "Terminated"}
    old = sandboxes_of(cut, {entries[sid]["sandboxId"] for sid in lost})
    stream = Stream(hosts, 0, lost[0], count=400)  # 0.3 s per event: far longer than the episode
    wait_for(lambda: len(stream.events) >= 2 or stream.error is not None, timeout=60, interval=0.1)
    assert stream.error is None, stream.error

    hosts.cluster.cut_off(cut)
    cut_at = time.monotonic()
    for gateway in (0, 1):
        wait_for(
            lambda g=gateway: (
                {e["runtimeSessionId"] for e in hosts.listing(g) if e["state"] == "Terminated"} >= set(lost)
            ),
            timeout=60,
            interval=0.2,
        )
    print(f"host {cut.name} cut off: its sessions Terminated after {time.monotonic() - cut_at:.1f} s")

    # The stream through the dead node ended, clearly: an error event, then a chunked body cut short.
    stream.thread.join(timeout=60)
    assert not stream.thread.is_alive(), "the stream ended when its node was taken for dead"
    assert isinstance(stream.error, httpx.RemoteProtocolError), repr(stream.error)
    assert 2 <= len(stream.events) < 400
    last = stream.events[-1]
    assert last["error_type"] == "RuntimeClientError" and cut.name in last["error"], last
    assert all("index" in e for e in stream.events[:-1])
    metrics = httpx.get(f"{hosts.gateways[0].url}/metrics", timeout=10).text
    assert f'hangar_cluster_streams_cut_total{{node="{cut.name}"}} 1.0' in metrics

    for sid in lost:  # their ids start afresh on the node still connected, while the old sandboxes still run
        assert hosts.invoke(0, sid)["count"] == 1
        assert hosts.sessions(1)[sid]["node"] == survivor.name

    reconnect(hosts, cut)
    back_at = time.monotonic()
    left = within(cut.netns or "", lambda: settled(old, cut.data_dir, timeout=60))
    print(f"host {cut.name} back: its old sandboxes gone after {time.monotonic() - back_at:.1f} s")
    assert left == [], "the returning node ended every sandbox whose binding went"
    said = [line for line in cut.log().splitlines() if "taken for dead" in line or "old session(s) ended" in line]
    assert said, "the node said why it ended them"
    print("\n".join(said))

    wait_for(lambda: all(cut.name in listed_nodes(hosts, g) for g in (0, 1)), timeout=60)
    wait_for(lambda: listed_nodes(hosts, 0)[cut.name]["healthy"], timeout=60)
    described = listed_nodes(hosts, 0)[cut.name]
    assert described["epoch"] == 1 and described["returning"] is False, described
    for sid in lost:  # the new sandbox is the only one: both gateways reach it, the old node runs none of them
        assert hosts.invoke(1, sid)["count"] == 2
        assert hosts.invoke(0, sid)["count"] == 3
        assert hosts.sessions(1)[sid]["node"] == survivor.name
    assert live_on(hosts, cut.name, set(lost)) == []
    for sid in kept:
        assert hosts.invoke(1, sid)["count"] == 2, "the other node's sessions went on"

    taken: list[str] = []
    while len(taken) < 12:  # the node is a node like any other again: after a few it takes a new session
        sid = new_id()
        assert hosts.invoke(0, sid)["count"] == 1
        taken.append(sid)
        if hosts.sessions(0)[sid]["node"] == cut.name:
            break
    assert hosts.sessions(1)[taken[-1]]["node"] == cut.name, "the returned node takes new sessions"
    hosts.stop(*lost, *kept, *taken)


def test_a_node_killed_mid_stream_ends_it_clearly_for_boto3(hosts: Hosts) -> None:
    """boto3 reads an SSE answer (``iter_lines``, as AWS's samples do); its node is killed with SIGKILL after two
    events. botocore raises on the aborted chunked body; the bytes of its last partial read (the gateway's error
    event among them) go with the exception, so for boto3 the exception is the signal (docs/cluster.md)."""
    victim = hosts.nodes[0]
    sid = place_on_both(hosts, 1)[victim.name][0]
    answer = hosts.data(1).invoke_agent_runtime(
        agentRuntimeArn=hosts.arn, runtimeSessionId=sid, payload=json.dumps({"action": "stream", "count": 400}).encode()
    )
    assert answer["contentType"].startswith("text/event-stream")
    events: list[dict[str, Any]] = []
    with pytest.raises(ResponseStreamingError, match="Connection broken"):
        for line in answer["response"].iter_lines():
            if line.startswith(b"data:"):
                events.append(json.loads(line[5:]))
                if len(events) == 2:
                    victim.kill()
    assert 2 <= len(events) < 400
    assert all("index" in e or e.get("error_type") == "RuntimeClientError" for e in events), events
    metrics = httpx.get(f"{hosts.gateways[1].url}/metrics", timeout=10).text
    assert f'hangar_cluster_streams_cut_total{{node="{victim.name}"}} 1.0' in metrics


def test_a_node_whose_ray_actor_died_ends_its_sessions_and_serves_under_a_new_one(hosts: Hosts) -> None:
    """Ray removes a live node's actor (as when it declares the node's Ray node dead during a long cut): the
    gateways take the node for dead and end its sessions; the node, still running, ends its sandboxes too, then
    comes back under a new actor and takes sessions again (before: it pushed to the dead actor forever)."""
    import ray

    node = next(n for n in hosts.nodes if n.process.poll() is None)
    placed: list[str] = []
    for _ in range(24):  # sessions until two run on this node (the other node may be down after the kill test)
        sid = new_id()
        assert hosts.invoke(0, sid)["count"] == 1
        if hosts.sessions(0)[sid]["node"] == node.name:
            placed.append(sid)
        if len(placed) == 2:
            break
    assert len(placed) == 2, "two sessions on the node"
    entries = {e["runtimeSessionId"]: e for e in hosts.listing(0) if e["state"] != "Terminated"}
    old = sandboxes_of(node, {entries[sid]["sandboxId"] for sid in placed})

    ray.kill(ray.get_actor(f"node:{node.name}", namespace="hangar"), no_restart=True)
    killed_at = time.monotonic()
    for gateway in (0, 1):  # to the gateways the node died: its sessions ended
        wait_for(
            lambda g=gateway: (
                {e["runtimeSessionId"] for e in hosts.listing(g) if e["state"] == "Terminated"} >= set(placed)
            ),
            timeout=60,
            interval=0.2,
        )
    left = within(node.netns or "", lambda: settled(old, node.data_dir, timeout=60))
    assert left == [], "the node ended every sandbox it had when its actor died"
    print(f"node {node.name}: actor killed, old sandboxes gone after {time.monotonic() - killed_at:.1f} s")
    wait_for(lambda: "serving again under a new Ray actor" in node.log(), timeout=60)
    assert "its Ray actor died" in node.log()

    wait_for(lambda: listed_nodes(hosts, 0).get(node.name, {}).get("healthy") is True, timeout=60)
    for sid in placed:  # their ids start afresh (on whichever node takes them): one sandbox each
        assert hosts.invoke(1, sid)["count"] == 1
        assert hosts.invoke(0, sid)["count"] == 2
    assert node.process.poll() is None, "the node lived through it"
    hosts.stop(*placed)
