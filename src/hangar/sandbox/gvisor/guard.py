"""A runtime's own sandbox choice (``HANGAR_SANDBOX_BACKEND`` in its environment), and the guard that keeps a
runtime which asks for gVisor from ever running without it: on a ``--sandbox process`` server it is refused."""

from __future__ import annotations

from hangar.domain.errors import RuntimeClientError, ValidationError
from hangar.sandbox.base import SandboxSpec
from hangar.sandbox.process import ProcessBackend, ProcessSandbox

RUNTIME_SWITCH = "HANGAR_SANDBOX_BACKEND"  # in a runtime's environment: gvisor, or namespace (the default)


def wants_gvisor(spec: SandboxSpec) -> bool:
    value = spec.environment.get(RUNTIME_SWITCH, "").strip().lower()
    if value in ("", "namespace"):
        return False
    if value == "gvisor":
        return True
    raise ValidationError(f"{RUNTIME_SWITCH}={value!r} is not a sandbox: use gvisor or namespace")


class GuardedProcessBackend(ProcessBackend):
    """The ``process`` backend, which refuses the sessions of runtimes that ask for gVisor."""

    async def start(self, spec: SandboxSpec) -> ProcessSandbox:
        if wants_gvisor(spec):
            raise RuntimeClientError(
                f"The runtime asks for gVisor ({RUNTIME_SWITCH}=gvisor), but this server runs sessions without "
                "isolation (--sandbox process): start it with isolation to serve this runtime."
            )
        return await super().start(spec)
