"""Isolation backends behind one small interface (namespace, process), plus the in-sandbox supervisor.

This package is the security boundary: it imports nothing from ``store``, ``sessions`` or ``gateway``.
"""

from hangar.sandbox.base import ExecEvent, Limits, Sandbox, SandboxBackend, SandboxSpec, SandboxStats
from hangar.sandbox.selection import select_backend

__all__ = ["ExecEvent", "Limits", "Sandbox", "SandboxBackend", "SandboxSpec", "SandboxStats", "select_backend"]
