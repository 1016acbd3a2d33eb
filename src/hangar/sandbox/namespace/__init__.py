"""The Linux ``namespace`` backend (bubblewrap, cgroups, seccomp). Refuses to import anywhere but Linux."""

import sys

if not sys.platform.startswith("linux"):
    raise ImportError("hangar.sandbox.namespace needs Linux; use the 'process' backend elsewhere")

from hangar.sandbox.namespace.backend import NamespaceBackend

__all__ = ["NamespaceBackend"]
