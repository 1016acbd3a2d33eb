"""The background half of the control plane: builds versions and finishes moves and deletions.

The work queue is the store itself: versions CREATING/UPDATING need a build, endpoints CREATING/UPDATING need to
go live, rows DELETING need removing. Every sweep reads that state, so work left behind by a crash (SIGKILL
included) is picked up by the first sweep after the restart; builds are idempotent (cached by content hash).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import replace
from datetime import datetime
from functools import partial

from sqlalchemy import Connection

from hangar.artifacts.api import BuildError
from hangar.control.context import TOKEN_TTL, Context
from hangar.domain.endpoint import Endpoint
from hangar.domain.invocation import PreparedVersion
from hangar.domain.runtime import IN_PROGRESS, RuntimeSpec, Status, Version
from hangar.store import endpoints as endpoint_rows
from hangar.store import idempotency
from hangar.store import resource_policies as policy_rows
from hangar.store import runtimes as rows
from hangar.store import tags as tag_rows
from hangar.store.transactions import utcnow

log = logging.getLogger("hangar.control")

SWEEP_INTERVAL_S = 5.0  # a safety net; writes wake the worker at once
MAX_PARALLEL_BUILDS = 2
BUILD_TIMEOUT_S = 1800.0  # a build still running then fails the version rather than leave it CREATING forever
PURGE_INTERVAL_S = 3600.0  # how often expired clientTokens are dropped

Prepare = Callable[[RuntimeSpec], PreparedVersion]


class Worker:
    def __init__(self, ctx: Context, prepare: Prepare) -> None:
        self.ctx = ctx
        self.prepare = prepare
        self._wake = asyncio.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._task: asyncio.Task[None] | None = None
        self._builds: dict[tuple[str, int], asyncio.Task[None]] = {}
        self._slots = asyncio.Semaphore(MAX_PARALLEL_BUILDS)
        self._next_purge = 0.0

    async def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._task = asyncio.create_task(self._run(), name="hangar-control-worker")

    async def stop(self) -> None:
        tasks = [t for t in (self._task, *self._builds.values()) if t is not None]
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        self._task = None

    def wake(self) -> None:
        """Thread-safe: called after every committed write."""
        if self._loop is not None and not self._loop.is_closed():
            self._loop.call_soon_threadsafe(self._wake.set)

    async def _run(self) -> None:
        while True:
            self._wake.clear()
            try:
                await asyncio.to_thread(self._sweep_rows)
                await self._start_builds()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("control-plane sweep failed; retrying after %ss", SWEEP_INTERVAL_S)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), SWEEP_INTERVAL_S)

    # -- builds -----------------------------------------------------------------------------------------------
    async def _start_builds(self) -> None:
        pending, deleting = await asyncio.to_thread(self.ctx.store.read, _pending_builds)
        for version in pending:
            key = (version.runtime_id, version.number)
            if key not in self._builds and version.runtime_id not in deleting:
                self._builds[key] = asyncio.create_task(self._build(version), name=f"build-{key[0]}-{key[1]}")

    async def _build(self, version: Version) -> None:
        key = (version.runtime_id, version.number)
        try:
            async with self._slots:
                prepared: PreparedVersion | None = None
                reason: str | None = None
                try:
                    prepared = await asyncio.wait_for(in_daemon_thread(self.prepare, version.spec), BUILD_TIMEOUT_S)
                except BuildError as exc:
                    reason = exc.reason
                except TimeoutError:
                    reason = f"preparing the artifact took longer than {BUILD_TIMEOUT_S:.0f} seconds"
                except Exception as exc:
                    log.exception("preparing %s version %s failed unexpectedly", *key)
                    reason = f"internal error while preparing the artifact ({type(exc).__name__})"
                await asyncio.to_thread(self.ctx.store.write, lambda c: settle(c, version, prepared, reason))
                self.ctx.after_write()
        finally:
            self._builds.pop(key, None)

    # -- moves and deletions ----------------------------------------------------------------------------------
    def _sweep_rows(self) -> None:
        store = self.ctx.store
        changed = False
        for endpoint in store.read(lambda c: endpoint_rows.endpoints_in(c, set(IN_PROGRESS))):
            changed |= store.write(partial(promote_endpoint, seen=endpoint))
        for endpoint in store.read(lambda c: endpoint_rows.endpoints_in(c, {Status.DELETING})):
            store.write(partial(_finish_endpoint_delete, endpoint=endpoint))
            changed = True
        for version in store.read(lambda c: rows.versions_in(c, {Status.DELETING})):
            store.write(partial(rows.delete_version, runtime_id=version.runtime_id, number=version.number))
            changed = True
        for runtime in store.read(lambda c: rows.runtimes_in(c, {Status.DELETING})):
            store.write(partial(rows.delete_runtime, runtime_id=runtime.runtime_id))
            changed = True
        if time.monotonic() >= self._next_purge:
            store.write(lambda c: idempotency.forget_before(c, utcnow() - TOKEN_TTL))
            self._next_purge = time.monotonic() + PURGE_INTERVAL_S
        if changed:
            self.ctx.after_write()


async def in_daemon_thread(fn: Callable[[RuntimeSpec], PreparedVersion], spec: RuntimeSpec) -> PreparedVersion:
    """Run a build in a daemon thread: a stopping server does not wait minutes for it (asyncio's default
    executor would); an interrupted build is simply redone at the next start, as after a crash."""
    loop = asyncio.get_running_loop()
    future: asyncio.Future[PreparedVersion] = loop.create_future()

    def deliver(result: PreparedVersion | None, error: BaseException | None) -> None:
        if future.done():
            return
        if error is not None:
            future.set_exception(error)
        else:
            future.set_result(result)  # type: ignore[arg-type]  # a result whenever there is no error

    def run() -> None:
        result: PreparedVersion | None = None
        error: BaseException | None = None
        try:
            result = fn(spec)
        except BaseException as exc:
            error = exc
        with contextlib.suppress(RuntimeError):  # the loop is closed: the server stopped meanwhile
            loop.call_soon_threadsafe(deliver, result, error)

    threading.Thread(target=run, name="hangar-build", daemon=True).start()
    return await future


def _pending_builds(conn: Connection) -> tuple[list[Version], set[str]]:
    """Versions waiting for a build, and the runtimes being deleted (whose versions need none)."""
    deleting = {r.runtime_id for r in rows.runtimes_in(conn, {Status.DELETING})}
    return rows.versions_in(conn, set(IN_PROGRESS)), deleting


def _finish_endpoint_delete(conn: Connection, endpoint: Endpoint) -> None:
    runtime = rows.get_runtime(conn, endpoint.runtime_id, for_update=True)
    if runtime is not None and runtime.status != Status.DELETING:
        endpoint_rows.delete_endpoint(conn, endpoint.runtime_id, endpoint.name)
        tag_rows.drop_tags(conn, endpoint.runtime_id, endpoint.name)
        policy_rows.delete_policy(conn, endpoint.runtime_id, endpoint.name)
    # an endpoint of a runtime being deleted goes with the runtime row (cascade)


def settle(conn: Connection, built: Version, prepared: PreparedVersion | None, reason: str | None) -> None:
    """Record a build's outcome on the version, the runtime and every endpoint waiting for it (one transaction)."""
    runtime = rows.get_runtime(conn, built.runtime_id, for_update=True)  # every writer locks the runtime first
    version = rows.get_version(conn, built.runtime_id, built.number)
    if version is None or runtime is None or version.status not in IN_PROGRESS:
        return  # deleted meanwhile, or settled by another process
    now = utcnow()
    failed = Status.CREATE_FAILED if version.status == Status.CREATING else Status.UPDATE_FAILED
    status = Status.READY if prepared is not None else failed
    rows.save_version(conn, replace(version, status=status, updated_at=now, failure_reason=reason, prepared=prepared))
    if runtime.latest_version == version.number and runtime.status in IN_PROGRESS:
        rows.save_runtime(conn, replace(runtime, status=status, updated_at=now, failure_reason=reason))
    for endpoint in endpoint_rows.endpoints_of(conn, runtime.runtime_id):
        if endpoint.target_version == version.number and endpoint.status in IN_PROGRESS:
            _move(conn, endpoint, status == Status.READY, f"version {version.number}: {reason}", now)


def promote_endpoint(conn: Connection, seen: Endpoint) -> bool:
    """An endpoint moving to a version that is already settled goes live (or fails) now; True if it changed."""
    if rows.get_runtime(conn, seen.runtime_id, for_update=True) is None:
        return False
    endpoint = endpoint_rows.get_endpoint(conn, seen.runtime_id, seen.name)
    if endpoint is None or endpoint.status not in IN_PROGRESS or endpoint.target_version is None:
        return False
    version = rows.get_version(conn, endpoint.runtime_id, endpoint.target_version)
    if version is not None and version.status in IN_PROGRESS:
        return False  # its build will settle it
    ok = version is not None and version.status == Status.READY
    reason = "the version was deleted" if version is None else f"version {version.number}: {version.failure_reason}"
    _move(conn, endpoint, ok, reason, utcnow())
    return True


def _move(conn: Connection, endpoint: Endpoint, ok: bool, reason: str, now: datetime) -> None:
    """The endpoint's move ends: the target goes live, or the move fails and the live version stays."""
    if ok:
        moved = replace(
            endpoint,
            status=Status.READY,
            live_version=endpoint.target_version,
            target_version=None,
            updated_at=now,
            failure_reason=None,
        )
    else:
        status = Status.CREATE_FAILED if endpoint.live_version is None else Status.UPDATE_FAILED
        moved = replace(endpoint, status=status, target_version=None, updated_at=now, failure_reason=reason)
    endpoint_rows.save_endpoint(conn, moved)
