"""``hangar node``'s composition: the sessions + sandbox half of Hangar, its Ray actor and its API.

Built beside ``services.build_services`` with the same fail-closed sandbox checks, but nothing of the control plane,
auth or console: the node reads the shared store only to resolve and prepare the versions a gateway sends it
(node_versions.py), and never migrates it (the gateways own the schema).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hangar.cluster import node_actor, node_return, ray_link
from hangar.cluster.node_api import NodeState, build_app
from hangar.cluster.node_versions import NodeVersions, s3_client_factory
from hangar.config import Settings
from hangar.observability.metrics import Metrics
from hangar.sessions.setup import build_sessions

log = logging.getLogger("hangar.cluster")

PUSH_INTERVAL_S = 1.0


@dataclass
class Node:
    settings: Settings
    name: str
    host: str
    port: int
    state: NodeState
    engine: Any
    actor: Any = None
    # Started before the sessions, stopped after them: the sandboxes' identity channel (cli/node.py, node_identity)
    components: list[Any] = field(default_factory=list)

    @property
    def address(self) -> str:
        return f"http://{self.host}:{self.port}"


def build_node(settings: Settings, *, name: str, host: str, port: int, gateway: str) -> Node:
    """The node's session manager and versions on ``settings`` (data dir, database URL, slots as max_sessions)."""
    from hangar.store.engine import create_store_engine
    from hangar.store.transactions import Store

    settings.data_dir.mkdir(parents=True, exist_ok=True)
    engine = create_store_engine(settings.resolved_database_url)
    versions = NodeVersions(settings, Store(engine), s3_client_factory(gateway, settings.region), gateway)
    manager = build_sessions(settings, Metrics(), versions.prepared)
    state = NodeState(name=name, manager=manager, versions=versions, key=b"")
    return Node(settings=settings, name=name, host=host, port=port, state=state, engine=engine)


def describe(node: Node) -> dict[str, Any]:
    """What the node pushes to its actor (see ``NodeAgent.describe``)."""
    manager = node.state.manager
    warm = [
        f"{t.runtime_id}:{t.version}"
        for t in node.state.versions.prepared()
        if manager.templates.ready(t)[0] is not None
    ]
    return {
        "address": node.address,
        "capacity": node.settings.max_sessions,
        "sessions": len(manager.live_sessions()),
        "memoryBytes": _available_memory(),
        "templates": sorted(warm),
    }


async def _push(node: Node) -> None:
    """Keep the actor's view current; learn the operator's drain from its answer."""
    while True:
        try:
            draining = await node.actor.update.remote(describe(node))
            node_return.pushed(node.state)
            if draining and not node.state.draining:
                log.warning("node %s is draining: no new sessions", node.name)
            node.state.draining = node.state.draining or bool(draining)
        except Exception as exc:
            if not _actor_died(exc):
                log.warning("node %s: cannot reach its Ray actor: %s", node.name, exc)
            else:  # Ray removed it for good (its Ray node declared dead, or killed): without one the node is gone
                log.warning("node %s: its Ray actor died (%s); ending its sessions, then a new actor", node.name, exc)
                with contextlib.suppress(Exception):  # the next round tries again, fenced meanwhile
                    await node_return.replace_lost_actor(node)
        await asyncio.sleep(PUSH_INTERVAL_S)


def _actor_died(exc: Exception) -> bool:
    """A push failed because the actor is gone for good (not merely unreachable for a moment)."""
    return isinstance(exc, ray_link.ray_module().exceptions.ActorDiedError)


async def run(node: Node) -> None:
    """Clean up orphans and start the sessions, join Ray, serve the API until SIGTERM/SIGINT, stop cleanly."""
    import uvicorn

    manager = node.state.manager
    for component in node.components:  # an agent may fetch its credentials as it imports
        await component.start()
    await manager.start()  # the backend removes what a killed node with this data dir left
    pusher: asyncio.Task[None] | None = None
    try:
        await asyncio.to_thread(ray_link.connect)
        node.state.key = await asyncio.to_thread(ray_link.cluster_key)
        node.actor = await asyncio.to_thread(node_actor.create, node.name, node.address, node.settings.max_sessions)
        pusher = asyncio.create_task(_push(node), name="node-push")
        returns = asyncio.create_task(node_return.watch(node), name="node-return")  # ends the old sessions of a
        pusher.add_done_callback(lambda _: returns.cancel())  # node the gateways took for dead, when it is back
        config = uvicorn.Config(
            build_app(node.state),
            host=node.host,
            port=node.port,
            log_level=node.settings.log_level.lower(),
            access_log=False,
            lifespan="off",
            timeout_graceful_shutdown=10,
        )
        log.info("node %s serving on %s", node.name, node.address)
        await _server_class()(config).serve()
    finally:
        if pusher is not None:
            pusher.cancel()
            with contextlib.suppress(BaseException):
                await pusher
        await manager.stop()
        for component in reversed(node.components):
            with contextlib.suppress(Exception):
                await component.stop()
        with contextlib.suppress(Exception):
            ray_link.disconnect()
        node.engine.dispose()


def _server_class() -> type[Any]:
    import uvicorn

    class Server(uvicorn.Server):
        """uvicorn re-raises a captured SIGTERM once it stops serving, which would kill the node before its
        sessions end; the node exits normally after ``manager.stop`` instead."""

        def handle_exit(self, sig: int, frame: Any) -> None:
            super().handle_exit(sig, frame)
            self._captured_signals.clear()

    return Server


def _available_memory(meminfo: Path = Path("/proc/meminfo")) -> int:
    with contextlib.suppress(OSError, ValueError):
        for line in meminfo.read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    return 0
