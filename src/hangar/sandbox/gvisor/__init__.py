"""The ``gvisor`` sandbox backend: sessions in gVisor (``runsc``) sandboxes. Import from here."""

from hangar.sandbox.gvisor.backend import GVisorBackend, GVisorSandbox

__all__ = ["GVisorBackend", "GVisorSandbox"]
