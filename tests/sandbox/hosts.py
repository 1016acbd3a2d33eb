"""Which backends this host can run: process always, namespace where Linux and root allow it."""

from __future__ import annotations

from hangar.sandbox.selection import namespace_unsupported_reason


def available_backends() -> list[str]:
    return ["process"] if namespace_unsupported_reason() else ["process", "namespace"]
