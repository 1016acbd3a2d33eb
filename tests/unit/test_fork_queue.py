"""The template's fork queue: one fork conversation at a time, a session's own fork before forks made ahead of one
(spares, the next prepared fork), each kind in arrival order; a waiter cancelled in line, or as its turn came,
never stalls the queue."""

from __future__ import annotations

import asyncio

from hangar.sandbox.namespace.templates import ForkQueue


async def _take(queue: ForkQueue, name: str, ahead: bool, order: list[str], release: asyncio.Event) -> None:
    async with queue.turn(ahead=ahead):
        order.append(name)
        await release.wait()


def test_a_requests_fork_goes_before_forks_made_ahead() -> None:
    async def main() -> list[str]:
        queue, order, release = ForkQueue(), [], asyncio.Event()
        holder = asyncio.create_task(_take(queue, "holder", True, order, release))
        await asyncio.sleep(0)  # the holder has the turn
        waiters = [
            asyncio.create_task(_take(queue, name, name.startswith("spare"), order, release))
            for name in ("spare-1", "spare-2", "request-1", "spare-3", "request-2")
        ]
        for _ in range(3):
            await asyncio.sleep(0)
        assert order == ["holder"]  # one conversation at a time
        release.set()
        await asyncio.wait_for(asyncio.gather(holder, *waiters), 10)
        return order

    assert asyncio.run(main()) == ["holder", "request-1", "request-2", "spare-1", "spare-2", "spare-3"]


def test_a_cancelled_waiter_does_not_stall_the_queue() -> None:
    async def main() -> list[str]:
        queue, order, release = ForkQueue(), [], asyncio.Event()
        holder = asyncio.create_task(_take(queue, "holder", False, order, release))
        await asyncio.sleep(0)
        gone = asyncio.create_task(_take(queue, "gone", False, order, release))
        last = asyncio.create_task(_take(queue, "last", True, order, release))
        await asyncio.sleep(0)
        gone.cancel()  # cancelled while in line
        release.set()
        await asyncio.wait_for(asyncio.gather(holder, last), 10)
        assert gone.cancelled()
        # Cancelled in the moment its turn came (the turn was handed to it, it had not run yet): passed on.
        release.clear()
        first = asyncio.create_task(_take(queue, "first", False, order, release))
        await asyncio.sleep(0)
        handed = asyncio.create_task(_take(queue, "handed", False, order, release))
        after = asyncio.create_task(_take(queue, "after", True, order, release))
        await asyncio.sleep(0)
        release.set()
        while not first.done():
            await asyncio.sleep(0)
        handed.cancel()  # its waiter's result is set, its task has not resumed yet
        await asyncio.wait_for(asyncio.gather(after, return_exceptions=True), 10)
        assert handed.cancelled() and "handed" not in order
        async with queue.turn(ahead=False):  # free again
            order.append("free")
        return order

    order = asyncio.run(main())
    assert order[:2] == ["holder", "last"] and "gone" not in order and order[-2:] == ["after", "free"]
