"""``hangar serve --cluster``: the gateway's sessions live on ``hangar node``s, reached over the node API.

``ClusterSessions`` stands in for the local ``SessionManager`` (services.py picks one or the other) and offers what
the gateway calls: ``call``/``use`` give a lease whose ``request``/``exec`` go to the session's node, which starts
the session there on its first call. A session's node is its row in ``session_placements`` (shared by every
gateway, so any gateway routes any session); a new session is placed by ``placement.candidates``. A watch loop
reads the nodes (Ray actors) every second: a node gone from Ray loses its bindings and its sessions are reported
Terminated, so the next call of such an id is placed afresh on a live node.

Bindings are kept in memory too (``_bindings``, bounded): a binding never changes while it exists, it is only
removed, so a warm call needs no SQL. A binding from memory is sent with ``X-Hangar-Existing``: a node that no
longer runs the session (another gateway stopped it, it ended by itself) answers ``NotFound`` instead of starting
it, and the call reads the table again (and places afresh if need be). Entries also go when this gateway stops the
session, when the watch drops a dead node's bindings, and when the reconcile drops those of ended sessions.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import OrderedDict, deque
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, cast

from prometheus_client.core import GaugeMetricFamily, Metric
from sqlalchemy import Engine
from websockets.asyncio.client import ClientConnection

from hangar.cluster import placement, ray_link, stream_end
from hangar.cluster.node_client import (
    NOT_HERE,
    REFUSALS,
    NodeClient,
    NodeNotConnected,
    NodeRefused,
    NodeUnreachable,
    RemoteResponse,
)
from hangar.cluster.node_logs import RemoteLogStore
from hangar.config import Settings
from hangar.domain import errors
from hangar.domain.invocation import InvocationTarget
from hangar.observability.logs import LogStore
from hangar.observability.metrics import Metrics
from hangar.sandbox.base import ExecEvent
from hangar.sessions.logs import SessionLogs
from hangar.sessions.session import SessionKey
from hangar.store import placements
from hangar.store.transactions import Store

if TYPE_CHECKING:
    from hangar.sessions.manager import SessionManager

log = logging.getLogger("hangar.cluster")

WATCH_S = 1.0
TERMINATED_KEPT = 200
TARGETS_KEPT = 10_000
PLACE_ATTEMPTS = 3
RECONCILE_TICKS = 5  # every 5 watches, bindings of sessions that ended on their node go
BINDINGS_KEPT = 100_000  # bindings remembered (least recently used go first): ~200 bytes each
OnEnd = Callable[[bool], Awaitable[None]]


@dataclass(eq=False)
class RemoteSession:
    """A session as the gateway knows it: its key, the version it was called with, and the node serving it."""

    key: SessionKey
    target: InvocationTarget
    node: str
    start_kind: str = "remote"
    spare_kind: str | None = None
    cold_reason: str | None = None
    started_at: float = field(default_factory=time.time)
    cached: bool = False  # the binding came from this gateway's memory, not the table: the node must confirm it
    placed_now: bool = False  # this gateway bound it for this call: no call of it has reached any node yet

    @property
    def sandbox_id(self) -> str:
        return f"{self.node}/{self.key.session_id}"

    @property
    def socket_path(self) -> str:
        raise errors.RuntimeClientError("This session runs on cluster node " + self.node + ": no local socket")

    @property
    def sandbox(self) -> Any:
        """What only a local session has: its shells are the node's (``RemoteLease.open_shell``)."""
        raise errors.RuntimeClientError("This session runs on cluster node " + self.node + ": no local sandbox")

    def alive(self) -> bool:
        return True  # the node answers for it; a dead node is noticed by the watch loop or the call itself


class RemoteLease:
    """One call on a remote session: same shape as ``sessions.calls.Lease``; the node keeps Active/Idle itself."""

    def __init__(self, owner: ClusterSessions, session: RemoteSession) -> None:
        self._owner = owner
        self.session = session
        self.handed_off = False
        self.released = False

    @property
    def socket_path(self) -> str:
        return self.session.socket_path

    def release(self) -> None:
        self.released = True

    def hand_off(self) -> OnEnd:
        self.handed_off = True

        async def on_end(completed: bool) -> None:
            self.release()
            if not completed:
                self._owner.check_soon(self.session.node)

        return on_end

    async def request(
        self, method: str, path: str, headers: list[tuple[str, str]], body: bytes | AsyncIterator[bytes] = b""
    ) -> RemoteResponse:
        tried: list[str] = []
        if self.session.cached and not isinstance(body, bytes):  # a streamed body cannot be sent twice
            self.session = await self._owner.rebind(self.session)
        while True:
            node = self.session.node
            try:
                answer = await self._owner.client(node).request(
                    self.session.target, self.session.key.session_id, method, path, headers, body, self.session.cached
                )
                return self._owner.streams.guard(node, self.session.key.session_id, answer)
            except NodeRefused as exc:
                if exc.code == NOT_HERE and self.session.cached:  # remembered binding is stale: read the table
                    self.session = await self._owner.rebind(self.session)
                    continue
                # A node refuses only a session it does not have (new, or ended there since): placing it elsewhere
                # is safe whenever the body can be sent again.
                if not (exc.code in REFUSALS and isinstance(body, bytes)) or len(tried) >= PLACE_ATTEMPTS:
                    raise _aws_error(exc) from exc
                tried.append(node)
                self.session = await self._owner.replace(self.session, tried)
            except NodeNotConnected as exc:
                # Placed a moment ago on a node that has just died (the directory is up to a second old): nothing
                # reached it, so the new session goes to another node instead of failing.
                fresh = self.session.placed_now and isinstance(body, bytes) and len(tried) < PLACE_ATTEMPTS
                if not (fresh and await self._owner.node_dead(node)):
                    raise await self._owner.unreachable(self.session, exc) from exc
                tried.append(node)
                self.session = await self._owner.replace(self.session, tried)
            except NodeUnreachable as exc:
                raise await self._owner.unreachable(self.session, exc) from exc

    async def exec(self, command: str, timeout: float) -> AsyncGenerator[ExecEvent, None]:
        if self.session.cached:  # the node would start the session: confirm the binding first
            self.session = await self._owner.rebind(self.session)
        client = self._owner.client(self.session.node)
        events = client.exec(self.session.target, self.session.key.session_id, command, timeout)
        try:
            async for event in events:
                yield event
        except NodeRefused as exc:
            raise _aws_error(exc) from exc
        except NodeUnreachable as exc:
            raise await self._owner.unreachable(self.session, exc) from exc
        finally:
            await events.aclose()

    async def broken(self) -> bool:
        return await self._owner.node_dead(self.session.node)

    async def open_websocket(
        self, headers: list[tuple[str, str]], subprotocols: list[str] | None, max_size: int
    ) -> ClientConnection:
        """The agent's ``/ws`` through the session's node (the gateway's WebSocket handler relays it as a local
        socket's)."""
        if self.session.cached:
            self.session = await self._owner.rebind(self.session)
        client = self._owner.client(self.session.node)
        return await client.websocket(self.session.target, self.session.key.session_id, headers, subprotocols, max_size)

    async def open_shell(self, shell_id: str) -> ClientConnection:
        """Shell ``shell_id`` of the session, attached on its node (``cluster/node_shells.py``): the gateway's shell
        handler relays its frames. The node's refusal (its shell cap: ``ServiceQuotaExceededException``) is the
        client's error; a shell is never placed on another node, as it lives with its session."""
        if self.session.cached:
            self.session = await self._owner.rebind(self.session)
        try:
            return await self._owner.client(self.session.node).shell(
                self.session.target, self.session.key.session_id, shell_id
            )
        except NodeRefused as exc:
            raise _aws_error(exc) from exc
        except NodeUnreachable as exc:
            raise await self._owner.unreachable(self.session, exc) from exc


class _Nothing:
    """The warm pool and templates of a gateway: they live on the nodes (``GET /hangar/nodes/``)."""

    def describe(self) -> dict[str, Any]:
        return {}

    def count(self) -> int:
        return 0


@dataclass
class _NoIdentities:
    socket_dir: None = None  # no sandbox runs here: the identity channel is the nodes' business


class ClusterSessions:
    """The gateway's session manager in cluster mode (see the module docstring)."""

    def __init__(self, settings: Settings, engine: Engine) -> None:
        self.settings = settings
        self.store = Store(engine)
        self.directory = placement.NodeDirectory()
        self.logs = SessionLogs(settings)  # its store reads the nodes': session output is kept on them
        self.remote_logs = RemoteLogStore(self.directory, lambda: self._key, settings.log_retention_s)
        self.logs.store = cast(LogStore, self.remote_logs)  # what logs_api and the console read
        self.pool = _Nothing()
        self.templates = _Nothing()
        self.identities = _NoIdentities()
        self.terminated: deque[dict[str, Any]] = deque(maxlen=TERMINATED_KEPT)
        self._clients: dict[str, NodeClient] = {}
        self._key: bytes | None = None
        self._known: dict[str, list[placements.Placement]] = {}  # bindings per node at the last look
        self._watch: asyncio.Task[None] | None = None
        self._checks: set[asyncio.Task[bool]] = set()
        self._ticks = 0
        self._targets: dict[SessionKey, InvocationTarget] = {}  # the version each session was last called with
        self._bindings: OrderedDict[SessionKey, str] = OrderedDict()  # session -> node, see the module docstring
        self.streams = stream_end.Streams()  # answers in flight per node: cut clearly when their node dies

    # --- lifecycle

    async def start(self) -> None:
        await asyncio.to_thread(ray_link.connect)
        self._key = await asyncio.to_thread(ray_link.cluster_key)
        await self.directory.nodes(fresh=True)
        self._watch = asyncio.create_task(self._watch_loop(), name="cluster-watch")

    async def stop(self) -> None:
        if self._watch is not None:
            self._watch.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._watch
        for client in self._clients.values():
            await client.aclose()
        self._clients.clear()
        await self.logs.stop()
        self.remote_logs.close()

    def describe_backend(self) -> dict[str, object]:
        nodes = [self.directory.known(n) for n in self._known]
        return {"name": "cluster", "nodes": len([n for n in nodes if n is not None])}

    # --- sessions

    def live_sessions(self) -> list[RemoteSession]:
        return []  # the sandboxes are the nodes': see list_sessions

    def get(self, runtime_id: str, session_id: str) -> RemoteSession | None:
        """A bound session this gateway has called before (the version it was called with is known only then)."""
        key = SessionKey(runtime_id, session_id)
        target = self._targets.get(key)
        if target is None:
            return None
        node = self._bindings.get(key)
        if node is not None:
            return RemoteSession(key, target, node, cached=True)
        node = self.store.read(lambda c: placements.node_of(c, runtime_id, session_id))
        return None if node is None else RemoteSession(key, target, node)

    def list_sessions(self) -> list[dict[str, object]]:
        """Only what this gateway knows without asking: sessions it saw end with their node (``listing`` asks)."""
        return list(reversed(self.terminated))

    async def listing(self) -> list[dict[str, object]]:
        """Every node's sessions (each entry with its ``node``), then sessions lost with a dead node."""
        nodes = await self.directory.nodes()

        async def of(node: placement.NodeInfo) -> list[dict[str, object]]:
            try:
                return [{**s, "node": node.name} for s in await self.client(node.name).sessions()]
            except (NodeRefused, NodeUnreachable) as exc:
                log.warning("node %s did not list its sessions: %s", node.name, exc)
                return []

        found = await asyncio.gather(*(of(n) for n in nodes))
        entries = [entry for part in found for entry in part]
        live = [e for e in entries if e.get("state") != "Terminated"]
        return live + [e for e in entries if e.get("state") == "Terminated"] + self.list_sessions()

    async def get_or_start(self, target: InvocationTarget, session_id: str) -> RemoteSession:
        return await self._bind(target, session_id)

    @contextlib.asynccontextmanager
    async def call(self, target: InvocationTarget, session_id: str) -> AsyncIterator[RemoteLease]:
        async with self._lease(await self._bind(target, session_id)) as lease:
            yield lease

    @contextlib.asynccontextmanager
    async def use(self, session: RemoteSession) -> AsyncIterator[RemoteLease]:
        async with self._lease(session) as lease:
            yield lease

    @contextlib.asynccontextmanager
    async def _lease(self, session: RemoteSession) -> AsyncIterator[RemoteLease]:
        lease = RemoteLease(self, session)
        try:
            yield lease
        except BaseException:
            lease.release()
            raise
        if not lease.handed_off:
            lease.release()

    async def stop_session(self, runtime_id: str, session_id: str, reason: str = "stopped") -> bool:
        self._forget(SessionKey(runtime_id, session_id))  # the table says where it is now (another gateway's?)
        node = await asyncio.to_thread(self.store.read, lambda c: placements.node_of(c, runtime_id, session_id))
        if node is None:
            return False
        try:
            stopped = await self.client(node).stop(runtime_id, session_id)
        except NodeUnreachable:
            stopped = await self.node_dead(node)  # a dead node's sessions are gone: it ended
        await asyncio.to_thread(self.store.write, lambda c: placements.remove(c, runtime_id, session_id, node))
        log.info("session %s of %s on %s stopped: %s", session_id, runtime_id, node, reason)
        return stopped

    # --- nodes

    def client(self, node: str) -> NodeClient:
        client = self._clients.get(node)
        info = self.directory.known(node)
        if client is None or (info is not None and info.address != client.address):
            if info is None:
                raise errors.ServiceUnavailableError(f"Cluster node {node} is not known to this gateway")
            if self._key is None:
                raise errors.ServiceUnavailableError("This gateway has not joined the cluster yet")
            client = self._clients[node] = NodeClient(node, info.address, self._key)
        return client

    async def nodes(self) -> list[dict[str, Any]]:
        """The operator's view, read fresh: a drain asked through another gateway shows at once (~1 ms per node)."""
        return [n.describe() for n in sorted(await self.directory.nodes(fresh=True), key=lambda n: n.name)]

    async def drain(self, name: str) -> bool:
        return await self.directory.drain(name)

    async def _bind(self, target: InvocationTarget, session_id: str, remembered: bool = True) -> RemoteSession:
        """The session's node: its binding (from memory when ``remembered``) when its node lives, else a new
        placement."""
        key = SessionKey(target.runtime_id, session_id)
        self._targets[key] = target
        if len(self._targets) > TARGETS_KEPT:
            self._targets.pop(next(iter(self._targets)))
        node = self._bindings.get(key) if remembered else None
        if node is not None:
            if self.directory.known(node) is not None:
                self._bindings.move_to_end(key)
                return RemoteSession(key, target, node, cached=True)
            self._forget(key)
        node = await asyncio.to_thread(self.store.read, lambda c: placements.node_of(c, *key))
        if node is not None:
            alive = {n.name for n in await self.directory.nodes() if not n.gone}
            if node in alive or not await self.node_dead(node):
                self._remember(key, node)
                return RemoteSession(key, target, node)
        return await self._place(key, target, exclude=[])

    async def rebind(self, session: RemoteSession) -> RemoteSession:
        """A remembered binding the node did not confirm (or could not be asked to): the table decides."""
        self._forget(session.key)
        return await self._bind(session.target, session.key.session_id, remembered=False)

    def _remember(self, key: SessionKey, node: str) -> None:
        self._bindings[key] = node
        self._bindings.move_to_end(key)
        if len(self._bindings) > BINDINGS_KEPT:
            self._bindings.popitem(last=False)

    def _forget(self, key: SessionKey) -> None:
        self._bindings.pop(key, None)

    def _forget_node(self, node: str) -> None:
        for key in [k for k, n in self._bindings.items() if n == node]:
            del self._bindings[key]

    async def _place(self, key: SessionKey, target: InvocationTarget, exclude: list[str]) -> RemoteSession:
        nodes = await self.directory.nodes()
        ranked = placement.candidates(nodes, placement.template_key(target.runtime_id, target.version), exclude)
        if not ranked:
            ranked = placement.candidates(await self.directory.nodes(fresh=True), "", exclude)
        if not ranked:
            raise errors.ServiceQuotaExceededError(
                f"No cluster node can take a new session now ({len(nodes)} known, all full, draining or unhealthy)"
            )
        chosen = ranked[0].name
        bound = await asyncio.to_thread(self.store.write, lambda c: placements.place(c, *key, chosen))
        self.directory.placed(bound)
        self._remember(key, bound)
        if bound != chosen:  # another gateway placed it first, maybe on a node this one has not read yet
            log.debug("session %s was placed on %s by another gateway", key.session_id, bound)
            if self.directory.known(bound) is None:
                await self.directory.nodes(fresh=True)
        return RemoteSession(key, target, bound, placed_now=bound == chosen)

    async def replace(self, session: RemoteSession, refused_by: list[str]) -> RemoteSession:
        """The node refused the session (it has no such live session and takes no new one): unbind it there, place
        it elsewhere."""
        key = session.key
        self._forget(key)
        await asyncio.to_thread(self.store.write, lambda c: placements.remove(c, *key, session.node))
        return await self._place(key, session.target, refused_by)

    async def unreachable(self, session: RemoteSession, exc: Exception) -> errors.HangarError:
        """The AWS-shaped error of a call whose node could not be reached, after checking whether it died."""
        if await self.node_dead(session.node):
            return errors.RuntimeClientError(
                f"The session's node {session.node} is gone: the session ended; a new call with this session id "
                "starts it afresh on another node"
            )
        return errors.RuntimeClientError(f"The session's node {session.node} could not be reached: {exc}")

    async def node_dead(self, node: str) -> bool:
        """Ask Ray now; a node without its actor is dead: its bindings go and its sessions end. True when dead."""
        alive = {n.name for n in await self.directory.nodes(fresh=True) if not n.gone}
        if node in alive:
            return False
        await self._lost(node)
        return True

    def check_soon(self, node: str) -> None:
        task = asyncio.create_task(self.node_dead(node))
        self._checks.add(task)
        task.add_done_callback(self._checks.discard)

    async def _lost(self, node: str) -> None:
        self.streams.abort(node, "the node is gone (dead, or cut off for too long)")
        self._forget_node(node)
        gone = await asyncio.to_thread(self.store.write, lambda c: placements.remove_node(c, node))
        seen = {(p.runtime_id, p.session_id): p for p in [*self._known.pop(node, []), *gone]}
        client = self._clients.pop(node, None)
        if client is not None:
            await client.aclose()
        now = time.time()
        for p in seen.values():
            self.terminated.append(_ended(p, now, f"node {node} died"))
        if seen:
            log.warning("node %s is gone: %d session(s) ended with it", node, len(seen))

    async def _watch_loop(self) -> None:
        while True:
            try:
                await self._watch_once()
            except Exception:
                log.exception("cluster watch failed; trying again")
            await asyncio.sleep(WATCH_S)

    async def _watch_once(self) -> None:
        alive = {n.name for n in await self.directory.nodes(fresh=True) if not n.gone}
        for name in self.directory.returned():  # back from the dead: no binding of before is used (node_return.py)
            self._forget_node(name)
        rows = await asyncio.to_thread(self.store.read, placements.all_placements)
        bound: dict[str, list[placements.Placement]] = {}
        for row in rows:
            bound.setdefault(row.node, []).append(row)
        for node in set(self._known) - alive:  # bindings seen before, node now gone (another gateway may have
            await self._lost(node)  # removed the rows already: the sessions it saw still end here)
        for node in set(bound) - alive:
            await self._lost(node)
        self._known = {n: rows for n, rows in bound.items() if n in alive}
        for name in alive:
            self._known.setdefault(name, [])
        self._ticks += 1
        if self._ticks % RECONCILE_TICKS == 0:
            await asyncio.gather(*(self._reconcile(n) for n, rows in self._known.items() if rows))

    async def _reconcile(self, node: str) -> None:
        """Drop the bindings of sessions their node says ended (idle, lifetime, agent exit) and does not run again:
        the table stays the set of live sessions. A session the node is starting counts as live, and only the very row
        seen by the watch goes (a session stopped and placed again since keeps its new row)."""
        try:
            entries, starting = await self.client(node).listing()
        except (NodeRefused, NodeUnreachable, errors.HangarError) as exc:
            log.debug("node %s did not list its sessions: %s", node, exc)
            return
        live: set[tuple[Any, Any]] = set(starting)
        live |= {(e.get("runtimeId"), e.get("runtimeSessionId")) for e in entries if e.get("state") != "Terminated"}
        ended = {(e.get("runtimeId"), e.get("runtimeSessionId")) for e in entries if e.get("state") == "Terminated"}
        stale = [p for p in self._known.get(node, []) if (p.runtime_id, p.session_id) in ended - live]
        for p in stale:
            self._forget(SessionKey(p.runtime_id, p.session_id))
            await asyncio.to_thread(self.store.write, lambda c, p=p: placements.remove_seen(c, p))


def build_cluster_sessions(settings: Settings, engine: Engine, metrics: Metrics) -> SessionManager:
    """The gateway's sessions in cluster mode, with gauges per node. Typed as the manager the gateway is written
    against: ``ClusterSessions`` offers the same calls (duck-typed; the lease test keeps handlers to them)."""
    sessions = ClusterSessions(settings, engine)
    metrics.registry.register(NodeCollector(sessions.directory))
    metrics.registry.register(sessions.streams)
    return cast("SessionManager", sessions)


class NodeCollector:
    """``hangar_cluster_node_{sessions,capacity,up}{node}``: each node as last described (no Ray call at scrape)."""

    def __init__(self, directory: placement.NodeDirectory) -> None:
        self.directory = directory

    def describe(self) -> list[Metric]:
        return []

    def collect(self) -> list[Metric]:
        sessions = GaugeMetricFamily("hangar_cluster_node_sessions", "Live sessions per cluster node.", labels=["node"])
        capacity = GaugeMetricFamily("hangar_cluster_node_capacity", "Session slots per cluster node.", labels=["node"])
        up = GaugeMetricFamily(
            "hangar_cluster_node_up", "1: the node takes new sessions (healthy, not draining).", labels=["node"]
        )
        for node in self.directory.cached():
            sessions.add_metric([node.name], node.sessions)
            capacity.add_metric([node.name], node.capacity)
            up.add_metric([node.name], int(node.healthy and not node.draining))
        return [sessions, capacity, up]


def _ended(p: placements.Placement, now: float, reason: str) -> dict[str, Any]:
    return {
        "runtimeId": p.runtime_id,
        "runtimeSessionId": p.session_id,
        "node": p.node,
        "state": "Terminated",
        "startedAt": p.created_at.timestamp(),
        "endedAt": now,
        "endReason": reason,
    }


def _aws_error(exc: NodeRefused) -> errors.HangarError:
    """A node's refusal as the AWS error it names (its code), else by its status."""
    for cls in _error_classes():
        if cls.code == exc.code:
            return cls(exc.message)
    if exc.code in REFUSALS or exc.status == 503:
        return errors.ServiceUnavailableError(f"Cluster node {exc.node}: {exc.message}")
    return errors.RuntimeClientError(f"Cluster node {exc.node}: {exc.message}")


def _error_classes() -> list[type[errors.HangarError]]:
    found: list[type[errors.HangarError]] = []
    pending: list[type[errors.HangarError]] = [errors.HangarError]
    while pending:
        cls = pending.pop()
        found.append(cls)
        pending.extend(cls.__subclasses__())
    return found
