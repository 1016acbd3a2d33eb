"""Pick the isolation backend for this host from the settings (``HANGAR_SANDBOX_BACKEND``)."""

from __future__ import annotations

import logging
import sys
import tempfile
from pathlib import Path

from hangar.config import Settings
from hangar.sandbox.base import SandboxBackend
from hangar.sandbox.process import ProcessBackend
from hangar.sandbox.state import instance_tag

log = logging.getLogger(__name__)


def namespace_unsupported_reason() -> str | None:
    """Why the namespace backend cannot run here, or None when it can."""
    if not sys.platform.startswith("linux"):
        return f"namespaces need Linux (this is {sys.platform})"
    from hangar.sandbox.namespace.host import unsupported_reason

    return unsupported_reason()


def select_backend(settings: Settings) -> SandboxBackend:
    """``auto``: namespace where the host supports it (bwrap, user namespaces, cgroups, root), else process."""
    choice = settings.sandbox_backend
    tag = instance_tag(settings.data_dir)
    if choice in ("auto", "namespace"):
        reason = namespace_unsupported_reason()
        if reason is None:
            from hangar.sandbox.namespace import NamespaceBackend

            return NamespaceBackend(state_root=Path("/run/hangar") / tag, tag=tag, egress=settings.egress)
        if choice == "namespace":
            raise RuntimeError(f"sandbox_backend=namespace, but this host cannot run it: {reason}")
        log.warning("namespace sandboxes unavailable (%s): falling back to the 'process' backend, NO ISOLATION", reason)
    return ProcessBackend(state_root=Path(tempfile.gettempdir()) / f"hangar-{tag}")
