"""The session manager: one sandbox per (runtime id, session id), started on first use and ended by every path.

A session is bound to the version that served its first call; later calls reuse its sandbox (so in-memory state
and files persist) even if the endpoint has moved since. Concurrent first calls share one start. The table lives
in memory: sessions do not survive a Hangar restart (``records.py`` keeps their descriptions so the operator API
reports them Terminated).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import replace
from pathlib import Path

from hangar.config import Settings
from hangar.domain.errors import HangarError, RuntimeClientError, ServiceUnavailableError
from hangar.domain.invocation import InvocationTarget
from hangar.observability import tracing
from hangar.observability.metrics import Metrics, reason_class
from hangar.sandbox.base import Sandbox, SandboxBackend, SandboxSpec
from hangar.sessions.agent_http import AgentHttp
from hangar.sessions.calls import Lease
from hangar.sessions.identity import SandboxIdentities
from hangar.sessions.images import image_fields
from hangar.sessions.lifecycle import Lifecycle
from hangar.sessions.limits import SessionQuota, sandbox_limits, version_limits
from hangar.sessions.logs import SessionLogs
from hangar.sessions.pool import Launched, Spare, WarmPool
from hangar.sessions.probe import wait_ready
from hangar.sessions.records import SessionRecords
from hangar.sessions.session import Session, SessionKey
from hangar.sessions.spares import SpareSizer
from hangar.sessions.storage import SessionStorage
from hangar.sessions.teardown import Teardowns
from hangar.sessions.templates import TemplateSet, key_of, opt_out

log = logging.getLogger("hangar.sessions")

DEATH_WAIT_S = 1.0
TEMPLATE_DRAIN_S = 5.0


class SessionManager:
    def __init__(
        self,
        settings: Settings,
        backend: SandboxBackend,
        records: SessionRecords | None = None,
        metrics: Metrics | None = None,
    ) -> None:
        self.settings = settings
        self.backend = backend
        self.metrics = metrics or Metrics()  # a bare manager (tests) reports to a registry nobody reads
        self.limits = sandbox_limits(settings)
        self.quota = SessionQuota(settings)
        self.records = records or SessionRecords(settings.data_dir / "sessions" / "records.json")
        self.lifecycle = Lifecycle(self)
        self.pool = WarmPool(
            lambda target: settings.warm_pool_runtimes.get(target.runtime_name, settings.warm_pool_size),
            self._launch,
            lambda spares: self.quota.total + spares < settings.max_sessions,
            self._stop_in_background,
            settings.session_time_scale,
        )
        # Which workload each sandbox acts for, and its own credentials (the identity channel reads it).
        self.identities = SandboxIdentities(settings.region, backend.outbound_dir())
        self.templates = TemplateSet(backend, settings.templates, self._spec, settings.session_time_scale)
        self.pool.cold_spares = self.templates.unforkable if settings.cold_spares and self.templates.enabled else None
        # filesystemConfigurations (sessions/storage.py)
        self.storage = SessionStorage(settings, backend.name, state_root=getattr(backend, "state_root", None))
        self.logs = SessionLogs(settings)  # each session's stdout/stderr, kept past its end (sessions/logs.py)
        self.spares = SpareSizer(settings, self._spare_forkable)  # forked spares by arrival rate (sessions/spares.py)
        self.pool.sizer = self.spares if self.templates.enabled and self.spares.enabled else None
        self.pool.fork_ready = lambda target: self.templates.ready(target)[0] is not None
        self.pool.busy = lambda: bool(self._starting)
        self.pool.on_claim = self.metrics.spare_claim
        self._live: dict[SessionKey, Session] = {}
        self._starting: dict[SessionKey, asyncio.Task[Session]] = {}
        self.teardowns = Teardowns()  # closes still releasing after their stop was answered
        self._stopping: set[asyncio.Task[object]] = set()  # sandbox stops and crash checks: shutdown waits for them
        self._closing = False
        self._records_dirty = False
        self._records_writer: asyncio.Task[None] | None = None

    def describe_backend(self) -> dict[str, object]:
        return {"backend": self.backend.name, "isolates": self.backend.isolates}

    async def start(self) -> None:
        """Clear what a previous (perhaps killed) process left, then start the lifecycle loop."""
        removed = await self.backend.cleanup_orphans()
        if removed:
            log.warning("removed %d sandboxes left by a previous Hangar process", removed)
        await self.storage.start()  # after the sandboxes: their storage views are detached by then
        previous = await asyncio.to_thread(self.records.load_previous)
        if previous:
            log.warning("%d sessions of the previous Hangar process are Terminated", previous)
        await self.records.save()
        self.lifecycle.start()
        self.pool.start()
        self.templates.start()

    async def stop(self) -> None:
        """Hangar shuts down: every session ends and its sandbox is stopped."""
        self._closing = True
        await self.lifecycle.stop()
        for task in list(self._starting.values()):
            task.cancel()
        await asyncio.gather(*self._starting.values(), return_exceptions=True)
        await self.templates.close()
        self._stop_in_background(await self.pool.close())
        await asyncio.gather(*(self.end(s, "Hangar shut down") for s in list(self._live.values())))
        while self._stopping:  # a background check may end one more session while we wait
            await asyncio.gather(*list(self._stopping), return_exceptions=True)
        if self._records_writer is not None:
            await asyncio.gather(self._records_writer, return_exceptions=True)
        await self._save()
        await self.logs.stop()
        await self.templates.drain(TEMPLATE_DRAIN_S)
        await self.storage.stop()
        await self.backend.settle()  # released leases whose veths the kernel removes after the stop

    def live_sessions(self) -> list[Session]:
        return list(self._live.values())

    def get(self, runtime_id: str, session_id: str) -> Session | None:
        return self._live.get(SessionKey(runtime_id, session_id))

    def list_sessions(self) -> list[dict[str, object]]:
        """Live sessions first, then recently Terminated ones (newest first), as plain dicts."""
        live = [{**s.describe(), **self.storage.describe(*s.key)} for s in self._live.values()]
        return live + list(reversed(self.records.terminated))

    async def get_or_start(self, target: InvocationTarget, session_id: str) -> Session:
        key = SessionKey(target.runtime_id, session_id)
        session = self._live.get(key)
        if session is not None:
            if session.sandbox.alive():
                return session
            await self.end(session, "agent exited")  # noticed before the lifecycle loop did: start afresh
        task = self._starting.get(key)
        if task is None:
            if self._closing:
                raise ServiceUnavailableError("Hangar is shutting down")
            self.quota.reserve(key.runtime_id)
            task = asyncio.create_task(self._start(key, target), name=f"start-session-{key.session_id}")
            task.add_done_callback(_retrieve)
            self._starting[key] = task
        # shield: a caller that gives up must not cancel a start other callers wait for
        return await asyncio.shield(task)

    async def _start(self, key: SessionKey, target: InvocationTarget) -> Session:
        try:
            with tracing.session_phases():  # the phases below are children of the calling invocation's span
                session = await self._start_sandbox(key, target)
        except BaseException:
            self.quota.release(key.runtime_id)
            raise
        finally:
            self._starting.pop(key, None)
        self._live[key] = session
        self.logs.begin(session)
        self.lifecycle.wake(session)
        self.records.started(session, session.describe())
        self._save_soon()
        return session

    async def _start_sandbox(self, key: SessionKey, target: InvocationTarget) -> Session:
        storage = await self.storage.acquire(target, key.session_id)  # None: the version has no sessionStorage
        try:
            return await self._start_with(key, target, storage)
        except BaseException:
            await self.storage.release(key.runtime_id, key.session_id)
            raise

    async def _start_with(self, key: SessionKey, target: InvocationTarget, storage: Path | None) -> Session:
        # A warm spare started before its session was known has no storage: such sessions start anew.
        spare, dead = self.pool.take(target) if storage is None else (None, [])
        self._stop_in_background(dead)  # a spare whose agent died is never handed out: the claim goes cold
        cold_reason: str | None = None
        spare_kind: str | None = None
        if spare is not None:
            sandbox, client, start_kind, spare_kind = spare.sandbox, spare.client, "warm", spare.kind
        else:
            launched = await self._launch(target, storage)
            sandbox, client, start_kind, cold_reason = (
                launched.sandbox,
                launched.client,
                launched.kind,
                launched.cold_reason,
            )
        self.identities.claim(sandbox.id, key.session_id)
        self.pool.claims[start_kind] += 1
        self.metrics.session_started(start_kind)
        self.spares.arrived(target)
        if storage is None:
            self.pool.want(target)
        self.templates.want(target)
        log.info(
            "session %s of %s started in sandbox %s (start_kind=%s%s)",
            key.session_id,
            target.runtime_arn,
            sandbox.id,
            start_kind,
            f", cold because {cold_reason}" if cold_reason else "",
        )
        scale = self.settings.session_time_scale
        return Session(
            key=key,
            target=target,
            sandbox=sandbox,
            client=client,
            idle_timeout_s=target.idle_timeout_s * scale,
            max_lifetime_s=target.max_lifetime_s * scale,
            start_kind=start_kind,
            cold_reason=cold_reason,
            spare_kind=spare_kind,
        )

    def _spare_forkable(self, target: InvocationTarget) -> bool:
        """May the version keep forked spares? It forks (templates on, not opted out, not unsafe) and its sessions
        have no storage (a spare cannot know which session's image to mount: those take the prepared fork)."""
        forks = self.templates.enabled and opt_out(target) is None and not self.templates.unforkable(target)
        return forks and self.storage.storage_path(target) is None

    def _spec(self, target: InvocationTarget, sandbox_id: str) -> SandboxSpec:
        """What every sandbox of ``target``'s version gets (sessions, spares and the version's template alike)."""
        image = target.prepared.image
        fields = (
            image_fields(image, self._environment(target))
            if image is not None
            else {
                "code_dir": target.prepared.code_dir,
                "env_dir": target.prepared.env_dir,
                "command": target.prepared.command(),
                "environment": self._environment(target),
            }
        )
        return SandboxSpec(
            sandbox_id=sandbox_id,
            agent_port=target.port,
            limits=version_limits(self.limits, target.minimum_memory_mib),
            network="none" if self.settings.egress == "deny" else "public",
            outbound=self.identities.outbound(),
            storage_path=self.storage.storage_path(target),
            volumes=self.storage.volumes(target),
            **fields,
        )

    async def _launch(self, target: InvocationTarget, storage: Path | None = None) -> Launched:
        """Start a sandbox for ``target`` (forked from its template when one is ready, else cold) and wait until
        its agent answers ``/ping``. A failed fork falls back to a cold start, never to an error."""
        began = time.monotonic()
        spec = replace(self._spec(target, f"hs-{uuid.uuid4().hex[:24]}"), storage=storage)
        template, cold_reason = self.templates.ready(target)
        self.identities.bind(spec.sandbox_id, target)  # before its agent runs: the import may fetch credentials
        sandbox: Sandbox | None = None
        kind = "cold"
        if template is not None:
            try:
                with tracing.phase("hangar.session.fork"):
                    sandbox = await self.backend.fork(template, spec)
                kind = "fork"
                self.identities.rename(spec.sandbox_id, sandbox.id)  # a fork prepared ahead has its own id
            except Exception as exc:
                cold_reason = f"the fork failed: {exc}"
                self.templates.fork_failed(target, cold_reason)  # an agent that never serves once forked: cold
                log.warning("forking a session of %s v%s failed, starting it cold: %s", *key_of(target), exc)
        if cold_reason is not None:
            self.templates.count_fallback(reason_class(cold_reason))  # the same classes as the metric's
            self.metrics.cold_fallback(cold_reason)
        try:
            if sandbox is None:
                with tracing.phase("hangar.session.launch"):
                    sandbox = await self.backend.start(spec)
        except HangarError as exc:
            self.identities.forget(spec.sandbox_id)
            if exc.status < 500:
                raise
            # The agent could not be launched: the caller's 424, never a 500 that boto3 would retry.
            raise RuntimeClientError(f"The session's sandbox could not start: {exc.message}") from exc
        except Exception as exc:
            self.identities.forget(spec.sandbox_id)
            log.exception("sandbox start failed for %s v%s", target.runtime_id, target.version)
            raise RuntimeClientError(f"Could not start a sandbox for this session: {exc}") from exc
        client = AgentHttp(str(sandbox.socket_path))
        try:
            with tracing.phase("hangar.session.wait_ready"):
                await wait_ready(client, sandbox, self.settings.session_start_timeout_s)
        except BaseException:
            await _close_quietly(client, sandbox)
            self.identities.forget(spec.sandbox_id)
            raise
        self.metrics.sandbox_ready(kind, time.monotonic() - began)
        return Launched(sandbox, client, kind, cold_reason)

    def expire_spares(self, now: float) -> None:
        """Stop warm-pool sandboxes that died or are no longer wanted, refill the rest (lifecycle loop)."""
        self.pool.sweep(now)

    def _stop_in_background(self, spares: list[Spare]) -> None:
        for spare in spares:
            task = asyncio.create_task(_close_quietly(spare.client, spare.sandbox, self.identities.forget))
            self._stopping.add(task)
            task.add_done_callback(self._stopping.discard)

    def _environment(self, target: InvocationTarget) -> dict[str, str]:
        region = self.settings.region
        # The runtime's own variables may not point the SDK elsewhere: the identity channel's come last.
        return {
            "AWS_REGION": region,
            "AWS_DEFAULT_REGION": region,
            **target.environment,
            **self.identities.environment(target),
        }

    async def end(self, session: Session, reason: str) -> None:
        """The one end path (stop, idle, max lifetime, crash, shutdown): Terminated, sandbox stopped. Idempotent."""
        if session.ended_at is not None:
            return
        session.ended_at = time.time()
        session.end_reason = reason
        session.busy = False
        if self._live.get(session.key) is session:
            del self._live[session.key]
        self.quota.release(session.key.runtime_id)
        self.records.remember_ended(session.describe(), session)
        log.info("session %s of %s ended: %s", session.key.session_id, session.key.runtime_id, reason)
        # A task of its own: a caller that is cancelled half-way must not leave the sandbox half-stopped.
        task = asyncio.create_task(self._close(session))
        self._stopping.add(task)
        task.add_done_callback(self._stopping.discard)
        whole = self.storage.storage_path(session.target) is not None
        await asyncio.shield(self.teardowns.until_dead(session.sandbox, task, whole))  # the release goes on behind

    async def _close(self, session: Session) -> None:
        await self.logs.end(session)  # its output file goes with the sandbox
        await _close_quietly(session.client, session.sandbox, self.identities.forget)
        await self.storage.release(session.key.runtime_id, session.key.session_id)  # after its views are gone
        self._save_soon()

    async def stop_session(self, runtime_id: str, session_id: str, reason: str = "stopped") -> bool:
        """End a session if it lives (or is starting); False when there is no such session."""
        key = SessionKey(runtime_id, session_id)
        task = self._starting.get(key)
        if task is not None:
            with contextlib.suppress(Exception):
                await asyncio.shield(task)
        session = self._live.get(key)
        if session is None:
            return False
        await self.end(session, reason)
        return True

    @contextlib.asynccontextmanager
    async def call(self, target: InvocationTarget, session_id: str) -> AsyncIterator[Lease]:
        """Get or start the session and hold it Active for the block (see ``calls.Lease``, ``hand_off`` for a
        streamed answer). Starting errors are raised before the block runs."""
        session = await self.get_or_start(target, session_id)
        async with self.use(session) as lease:
            yield lease

    @contextlib.asynccontextmanager
    async def use(self, session: Session) -> AsyncIterator[Lease]:
        """Hold an existing session Active for the block. Released on leaving it, unless the lease was handed off
        to a stream and the block ended normally (the stream releases it then)."""
        lease = Lease(self, session)
        try:
            yield lease
        except BaseException:
            lease.release()  # the block failed: no response carries the lease, whatever was handed off
            raise
        if not lease.handed_off:
            lease.release()

    async def _agent_failed(self, session: Session) -> bool:
        """The agent's connection broke: if its process tree is gone, end the session. True when it ended."""
        deadline = time.monotonic() + DEATH_WAIT_S
        while session.sandbox.alive() and time.monotonic() < deadline:
            await asyncio.sleep(0.02)
        if session.sandbox.alive():
            return False
        await self.end(session, "agent exited")
        return True

    def _agent_failed_later(self, session: Session) -> None:
        """Like ``_agent_failed``, in the background (a broken stream must not wait for the check)."""
        task = asyncio.create_task(self._agent_failed(session))
        self._stopping.add(task)
        task.add_done_callback(self._stopping.discard)

    def _save_soon(self) -> None:
        """The records are for the next process (crash reports), not for this request: written beside it, and
        coalesced (a burst of starts and ends is one write, never a write per session on the event loop)."""
        self._records_dirty = True
        if self._records_writer is None or self._records_writer.done():
            self._records_writer = asyncio.create_task(self._write_records())

    async def _write_records(self) -> None:
        while self._records_dirty:
            self._records_dirty = False
            await self._save()

    async def _save(self) -> None:
        try:
            await self.records.save()
        except OSError:
            log.exception("could not write session records")


async def _close_quietly(client: AgentHttp, sandbox: Sandbox, forget: Callable[[str], None] | None = None) -> None:
    stop = getattr(sandbox, "stop", None)
    try:
        if stop is not None:
            await stop()
    except Exception:
        log.exception("sandbox stop failed")
    finally:
        if forget is not None:
            forget(sandbox.id)  # its credentials die with it
    with contextlib.suppress(Exception):
        await client.aclose()


def _retrieve(task: asyncio.Task[Session]) -> None:
    """Mark a failed start's exception as seen (its callers may all have gone)."""
    if not task.cancelled():
        task.exception()
