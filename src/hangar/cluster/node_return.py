"""A node that comes back after the gateways took it for dead ends every sandbox it had, before it serves again.

A host cut off from the network cannot push its state to its ``NodeAgent``; once it has been silent for
``GONE_AFTER_S`` the gateways drop its bindings and start those session ids afresh on other nodes. When the link
comes back the node's old sandboxes would still answer for ids that now live elsewhere (two sandboxes for one id).

So, on the node: when no push has been acknowledged for ``FENCE_AFTER_S`` (a little less than the gateways'
``GONE_AFTER_S``) the node fences itself: the node API refuses every session call with 503
``ServiceUnavailableException`` (not a placement refusal: a gateway that still trusts this node must not bind the
session elsewhere while its sandbox lives on here). Once a push goes through again, the actor says whether that push
ended a silence of ``GONE_AFTER_S`` or more (its ``epoch`` moved past what the node ``cleaned``). If it did, the node
stops every session it runs or is starting, removes its own rows from ``session_placements`` (a gateway that missed
the whole episode must not route there), reports the epoch cleaned, and only then lifts the fence. Until the report,
the actor describes the node as ``returning``: unhealthy and gone to every gateway (no placement, no routing, its
bindings dropped).
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import TYPE_CHECKING, Any

from hangar.cluster.placement import GONE_AFTER_S

if TYPE_CHECKING:
    from hangar.cluster.node import Node
    from hangar.cluster.node_api import NodeState

log = logging.getLogger("hangar.cluster")

FENCE_AFTER_S = GONE_AFTER_S - 3.0  # the node refuses calls a little before the gateways may declare it gone
CHECK_S = 0.25
EPOCH_CHECK_S = 1.0
ASK_WITHIN_S = 3.0  # the actor is asked only while pushes go through (a stalled Ray would hold the fence check)
ACTOR_TIMEOUT_S = 5.0
PUSHED = "pushed_at"  # NodeState.extra keys
FENCED = "fenced"
END_REASON = "its node was cut off and taken for dead by the gateways"
LOST_ACTOR_REASON = "its node lost its Ray actor and was taken for dead by the gateways"


def pushed(state: NodeState) -> None:
    """A push reached the actor (called by the node's push loop)."""
    state.extra[PUSHED] = time.monotonic()


def fenced(state: NodeState) -> str | None:
    """Why the node refuses every session call now, or None (read by the node API)."""
    return state.extra.get(FENCED)


async def watch(node: Node) -> None:
    """Fence the node while its pushes stall; when they resume, end the old sessions if the gateways took it for
    dead, then lift the fence."""
    state = node.state
    state.extra.setdefault(PUSHED, time.monotonic())
    fenced_at: float | None = None
    asked_at = 0.0
    while True:
        await asyncio.sleep(CHECK_S)
        try:
            silent = time.monotonic() - float(state.extra[PUSHED])
            if silent >= FENCE_AFTER_S and fenced_at is None:
                fenced_at = time.monotonic()
                state.extra[FENCED] = f"node {node.name} lost its cluster link ({silent:.0f} s without a push)"
                log.warning("node %s: no push for %.1f s, refusing session calls until it is back", node.name, silent)
            if fenced_at is not None and float(state.extra[PUSHED]) > fenced_at:
                await _returned(node)  # pushes go through again
                fenced_at = None
                state.extra.pop(FENCED, None)
            elif fenced_at is None and silent < ASK_WITHIN_S and time.monotonic() - asked_at >= EPOCH_CHECK_S:
                asked_at = time.monotonic()
                await _check_epoch(node)  # a silence the node itself did not notice (its push hung, then landed)
        except Exception as exc:  # the next round tries again; the fence stays meanwhile
            log.warning("node %s: checking its return failed: %s", node.name, exc)


async def _check_epoch(node: Node) -> None:
    epoch, cleaned = await _ask(node.actor.epoch.remote())
    if cleaned < epoch:
        node.state.extra[FENCED] = f"node {node.name} is ending the sessions it had before its link broke"
        try:
            await _end_old_sessions(node, int(epoch))
        finally:
            node.state.extra.pop(FENCED, None)


async def _returned(node: Node) -> None:
    epoch, cleaned = await _ask(node.actor.epoch.remote())
    if cleaned < epoch:
        await _end_old_sessions(node, int(epoch))
    else:
        log.info("node %s: back before the gateways took it for dead; its sessions go on", node.name)


async def replace_lost_actor(node: Node) -> None:
    """The node's actor is gone while the node lives on (Ray declared its Ray node dead during a long cut, or the
    actor was killed): to the gateways this node died, and they ended its sessions. End them here too, under the
    fence, then come back under a new actor, a fresh node to every gateway."""
    from hangar.cluster import node_actor

    node.state.extra[FENCED] = f"node {node.name} lost its Ray actor and is ending the sessions it had"
    try:
        await _end_sessions(node, LOST_ACTOR_REASON)
        node.actor = await asyncio.to_thread(node_actor.create, node.name, node.address, node.settings.max_sessions)
        pushed(node.state)
        log.warning("node %s: serving again under a new Ray actor", node.name)
    finally:
        node.state.extra.pop(FENCED, None)


async def _end_old_sessions(node: Node, epoch: int) -> None:
    """End the sessions of before ``epoch``, then tell the actor (which then describes the node as healthy again)."""
    await _end_sessions(node, END_REASON, epoch=epoch)
    await _ask(node.actor.cleaned.remote(epoch))


async def _end_sessions(node: Node, reason: str, epoch: int | None = None) -> None:
    """Stop every session this node runs or starts (their ids may live on another node now), drop its bindings."""
    manager = node.state.manager
    keys = {s.key for s in manager.live_sessions()} | set(manager._starting)
    started = time.monotonic()
    log.warning(
        "node %s was taken for dead by the gateways (epoch %s): ending its %d session(s) of before",
        node.name,
        "new actor" if epoch is None else epoch,
        len(keys),
    )
    await asyncio.gather(*(manager.stop_session(k.runtime_id, k.session_id, reason=reason) for k in keys))
    try:
        await asyncio.to_thread(_drop_bindings, node.engine, node.name)
    except Exception as exc:  # the store may still be out of reach: the gateways dropped these rows themselves
        log.warning("node %s: could not drop its old bindings: %s", node.name, exc)
    log.warning(
        "node %s: %d old session(s) ended in %.2f s; taking sessions again",
        node.name,
        len(keys),
        time.monotonic() - started,
    )


def _drop_bindings(engine: Any, name: str) -> None:
    from hangar.store import placements
    from hangar.store.transactions import Store

    Store(engine).write(lambda c: placements.remove_node(c, name))


async def _ask(ref: Any) -> Any:
    return await asyncio.wait_for(ref, timeout=ACTOR_TIMEOUT_S)
