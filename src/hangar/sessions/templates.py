"""Warm templates per served version: started beside the request path, restarted when they die, retired when nothing
serves their version; a new session forks from its version's template when one is ready.

Which versions get a template: with a ``served`` source (the control plane, wired by ``sessions/setup.py``) every
version an endpoint serves, from the moment it is READY; without one (a bare manager), a version after its first
session, until its idle timeout passes without another. A version never gets one when templates are off
(``HANGAR_TEMPLATES=false``), the backend cannot fork (``process``), the runtime opts out with the environment
variable ``HANGAR_TEMPLATE=off``, or it is an image whose entry point is not ``python3.11+ script.py``. A template
that reports itself unsafe to fork (threads at import, an entry point that is not a Python script, uvicorn started
inside an event loop that is not the agent's fork point) is not restarted: that version's sessions start cold and
the reason is in the logs, the session's ``coldReason`` and ``GET /hangar/sessions/``; with ``cold_spares`` the warm
pool keeps one cold spare of such a version started ahead (``unforkable``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import re
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from hangar.domain.invocation import InvocationTarget
from hangar.sandbox.base import SandboxBackend, SandboxSpec, Template, TemplateUnsafe
from hangar.sessions.images import image_cold_reason

log = logging.getLogger("hangar.sessions")

RECONCILE_S = 1.0
MAX_BACKOFF_S = 60.0
OPT_OUT_VALUES = {"0", "off", "false", "no"}
# sandbox/zygote.py's NEVER_SERVED, as the failed fork's log tail carries it
NEVER_SERVED = re.compile(r"the agent's event loop entered at \S+ \(its fork point\) ended before uvicorn[^\n]*")

Served = Callable[[], Awaitable[list[InvocationTarget]]]
Key = tuple[str, str]  # (runtime id, version)


def key_of(target: InvocationTarget) -> Key:
    return (target.runtime_id, target.version)


@dataclass
class VersionState:
    target: InvocationTarget
    wanted_until: float
    template: Template | None = None
    starting: asyncio.Task[None] | None = None
    unsafe: str | None = None  # why this version cannot be templated (not retried)
    failure: str | None = None  # why the last start failed (retried with back-off)
    retry_at: float = 0.0
    delay: float = 0.0
    restarts: int = 0


class TemplateSet:
    def __init__(
        self,
        backend: SandboxBackend,
        enabled: bool,
        spec_for: Callable[[InvocationTarget, str], SandboxSpec],
        idle_scale: float = 1.0,
    ) -> None:
        self.backend = backend
        self.enabled = enabled and backend.supports_templates
        self._spec_for = spec_for  # (target, sandbox id) -> the spec a session of that version would get
        self._idle_scale = idle_scale
        self.served: Served | None = None
        self._versions: dict[Key, VersionState] = {}
        self._loop: asyncio.Task[None] | None = None
        self._retiring: set[asyncio.Task[None]] = set()
        self.fallbacks: dict[str, int] = {}  # reason -> cold starts it caused

    # --- the request path

    def ready(self, target: InvocationTarget) -> tuple[Template | None, str | None]:
        """The version's live template, or None and why a session of it starts cold (None: templates are off)."""
        if not self.enabled:
            return None, None
        reason = opt_out(target)
        if reason is not None:
            return None, reason
        state = self._versions.get(key_of(target))
        if state is None:
            return None, "no template for this version yet"
        if state.unsafe is not None:
            return None, state.unsafe
        template = state.template
        if template is not None and template.alive():
            return template, None
        if template is not None and template.unsafe_reason is not None:
            state.unsafe = template.unsafe_reason
            return None, state.unsafe
        return None, state.failure or "the version's template is starting"

    def unforkable(self, target: InvocationTarget) -> bool:
        """The version's template reported that the agent cannot fork: all its sessions start cold (the warm pool
        keeps a cold spare of it started ahead, ``sessions/pool.py``)."""
        state = self._versions.get(key_of(target)) if self.enabled else None
        if state is None:
            return False
        template = state.template
        if state.unsafe is None and template is not None and template.unsafe_reason is not None:
            state.unsafe = template.unsafe_reason
        return state.unsafe is not None

    def fork_failed(self, target: InvocationTarget, reason: str) -> None:
        """A fork of ``target`` failed. When the agent, resumed at its fork point, ended its event loop before
        uvicorn listened (``sandbox/zygote.py`` says so in the session's log), no fork of it ever will: the version
        starts cold from now on with that reason (and gets a cold spare); any other failure is per session."""
        found = NEVER_SERVED.search(reason)
        state = self._versions.get(key_of(target))
        if found is None or state is None or state.unsafe is not None:
            return
        state.unsafe = found.group(0)
        log.warning("sessions of %s v%s start cold: %s", *key_of(target), state.unsafe)
        self._retire(state.template)
        state.template = None

    def count_fallback(self, reason: str) -> None:
        self.fallbacks[reason] = self.fallbacks.get(reason, 0) + 1

    def want(self, target: InvocationTarget) -> None:
        """A session of ``target`` started: without a served source, keep its template until the idle timeout."""
        if not self.enabled or self.served is not None or opt_out(target) is not None:
            return
        until = time.time() + target.idle_timeout_s * self._idle_scale
        state = self._versions.get(key_of(target))
        if state is None:
            self._versions[key_of(target)] = VersionState(target, until)
        else:
            state.wanted_until = max(state.wanted_until, until)
        self.sweep(time.time())

    # --- background work

    def start(self) -> None:
        if self.enabled and self._loop is None:
            self._loop = asyncio.create_task(self._run(), name="hangar-templates")

    async def _run(self) -> None:
        while True:
            try:
                if self.served is not None:
                    targets = await self.served()
                    wanted = {key_of(t): t for t in targets if opt_out(t) is None}
                    for key, target in wanted.items():
                        if key not in self._versions:
                            self._versions[key] = VersionState(target, math.inf)
                    for key, state in self._versions.items():
                        state.wanted_until = math.inf if key in wanted else 0.0
                self.sweep(time.time())
            except Exception:
                log.exception("warm template reconcile failed")
            await asyncio.sleep(RECONCILE_S)

    def sweep(self, now: float) -> None:
        """Retire templates of versions no longer wanted; start or restart the wanted ones."""
        for key, state in list(self._versions.items()):
            if state.wanted_until <= now:
                del self._versions[key]
                if state.starting is not None:
                    state.starting.cancel()
                self._retire(state.template)
                continue
            if state.unsafe is not None or state.starting is not None or now < state.retry_at:
                continue
            template = state.template
            if template is not None and template.alive():
                continue
            if template is not None:
                if template.unsafe_reason is not None:
                    state.unsafe = template.unsafe_reason
                    log.warning("warm template of %s v%s is unusable: %s", *key, state.unsafe)
                    self._retire(template)
                    continue
                log.warning("warm template of %s v%s died: restarting it", *key)
                state.restarts += 1
                self._retire(template)
                state.template = None
            state.starting = asyncio.create_task(self._start(key, state), name=f"template-{key[0]}-v{key[1]}")

    async def _start(self, key: Key, state: VersionState) -> None:
        spec = self._spec_for(state.target, f"ht-{key[0][-12:].lower()}-{int(time.time() * 1000) % 10**9}")
        try:
            template = await self.backend.start_template(spec)
        except TemplateUnsafe as exc:
            state.unsafe = str(exc)
            log.warning("sessions of %s v%s start cold: the agent cannot be templated: %s", *key, exc)
            return
        except Exception as exc:
            state.delay = min(MAX_BACKOFF_S, max(1.0, 2 * state.delay))
            state.retry_at = time.time() + state.delay
            state.failure = f"the template failed to start: {exc}"
            log.warning("warm template of %s v%s failed to start (retry in %.0f s): %s", *key, state.delay, exc)
            return
        finally:
            state.starting = None
        if self._versions.get(key) is not state:  # retired while it started
            self._retire(template)
            return
        state.template, state.failure, state.delay = template, None, 0.0
        log.info("warm template of %s v%s ready", *key)

    def _retire(self, template: Template | None) -> None:
        if template is None:
            return
        task = asyncio.create_task(self._stop_quietly(template))
        self._retiring.add(task)
        task.add_done_callback(self._retiring.discard)

    @staticmethod
    async def _stop_quietly(template: Template) -> None:
        try:
            await template.stop()
        except Exception:
            log.exception("retiring warm template %s failed", template.id)

    def describe(self) -> dict[str, object]:
        return {
            "enabled": self.enabled,
            "versions": {
                f"{rid}/{version}": {
                    "template": state.template.describe() if state.template is not None else None,
                    "starting": state.starting is not None,
                    "unsafeReason": state.unsafe,
                    "lastFailure": state.failure,
                    "restarts": state.restarts,
                }
                for (rid, version), state in self._versions.items()
            },
            "coldFallbacks": dict(self.fallbacks),
        }

    async def close(self) -> None:
        if self._loop is not None:
            self._loop.cancel()
            with contextlib.suppress(BaseException):
                await self._loop
            self._loop = None
        for state in self._versions.values():
            if state.starting is not None:
                state.starting.cancel()
                with contextlib.suppress(BaseException):
                    await state.starting
            self._retire(state.template)
        self._versions.clear()

    async def drain(self, timeout: float) -> None:
        """After the last session ended: wait (bounded) for retired templates to be removed; a later start's
        orphan cleanup takes whatever is left."""
        if self._retiring:
            _, pending = await asyncio.wait(set(self._retiring), timeout=timeout)
            for task in pending:
                task.cancel()


def opt_out(target: InvocationTarget) -> str | None:
    if target.prepared.image is not None:
        reason = image_cold_reason(target.prepared.image)
        if reason is not None:
            return reason
    value = target.environment.get("HANGAR_TEMPLATE", "").strip().lower()
    if value in OPT_OUT_VALUES:
        return f"the runtime opts out of warm templates (HANGAR_TEMPLATE={value})"
    return None
