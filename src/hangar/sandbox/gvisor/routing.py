"""gVisor per server or per runtime: which isolating backend ``hangar serve`` uses, and the router that sends the
sessions of runtimes with ``HANGAR_SANDBOX_BACKEND=gvisor`` in their environment to gVisor and all others to namespaces.

A runtime that asks for gVisor never silently gets less: where runsc cannot run, its sessions fail with the reason.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Literal

from hangar.config import Settings
from hangar.domain.errors import RuntimeClientError
from hangar.sandbox.base import Sandbox, SandboxBackend, SandboxSpec, Template, TemplateUnsafe
from hangar.sandbox.gvisor import host
from hangar.sandbox.gvisor.backend import COLD_REASON, GVisorBackend
from hangar.sandbox.gvisor.guard import RUNTIME_SWITCH, wants_gvisor
from hangar.sandbox.namespace import NamespaceBackend

STATE_ROOT = Path("/run/hangar")


def gvisor_tag(tag: str) -> str:
    """gVisor sandboxes get their own tag: their state dirs, cgroups, netns and uid leases are never taken for the
    namespace backend's orphans (nor the other way round)."""
    return f"{tag}g"


def gvisor_backend(settings: Settings, tag: str) -> GVisorBackend:
    return GVisorBackend(
        state_root=STATE_ROOT / gvisor_tag(tag),
        tag=gvisor_tag(tag),
        egress=settings.egress,
        runsc=settings.gvisor_runsc,
        platform=settings.gvisor_platform,
    )


def isolating_backend(settings: Settings, tag: str) -> SandboxBackend:
    """``gvisor``: every session in gVisor; ``auto``/``namespace``: namespaces, and gVisor for runtimes that ask."""
    if settings.sandbox_backend == "gvisor":
        return gvisor_backend(settings, tag)
    gvisor = gvisor_backend(settings, tag)
    return RoutingBackend(
        STATE_ROOT / tag, tag, settings.egress, gvisor, settings.gvisor_runsc, settings.gvisor_platform
    )


class RoutingBackend(NamespaceBackend):
    """The namespace backend itself, which hands the sessions of runtimes whose environment sets
    ``HANGAR_SANDBOX_BACKEND=gvisor`` to its gVisor backend (cold: no templates there)."""

    def __init__(
        self,
        state_root: Path,
        tag: str,
        egress: Literal["allow", "deny"],
        gvisor: GVisorBackend,
        runsc: str,
        platform: str,
    ) -> None:
        super().__init__(state_root=state_root, tag=tag, egress=egress)
        self.gvisor = gvisor
        self.runsc = runsc
        self.platform = platform

    async def _checked_gvisor(self) -> GVisorBackend:
        """The gVisor backend, once a trial sandbox showed that runsc works here (checked once, off the loop)."""
        reason = await asyncio.to_thread(host.unsupported_reason, self.runsc, self.platform)
        if reason is not None:
            raise RuntimeClientError(
                f"The runtime asks for gVisor ({RUNTIME_SWITCH}=gvisor), not available here: {reason}"
            )
        return self.gvisor

    async def start(self, spec: SandboxSpec) -> Sandbox:  # type: ignore[override]  # a gVisor one, not a namespace one
        if wants_gvisor(spec):
            return await (await self._checked_gvisor()).start(spec)
        return await super().start(spec)

    async def start_template(self, spec: SandboxSpec) -> Template:
        if wants_gvisor(spec):
            raise TemplateUnsafe(COLD_REASON)
        return await super().start_template(spec)

    def sandbox_of_peer(self, pid: int, uid: int) -> str | None:
        return super().sandbox_of_peer(pid, uid) or self.gvisor.sandbox_of_peer(pid, uid)

    async def cleanup_orphans(self) -> int:
        return await super().cleanup_orphans() + await self.gvisor.cleanup_orphans()
