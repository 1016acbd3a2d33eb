"""Pick the isolation backend for this host from the settings (``HANGAR_SANDBOX_BACKEND``).

Secure by default: ``auto`` means "isolate, or refuse to serve". Running agents without isolation takes an explicit
``process``, and then every start says so.
"""

from __future__ import annotations

import logging
import os
import shutil
import stat
import sys
import tempfile
from pathlib import Path

from hangar.config import Settings
from hangar.sandbox.base import SandboxBackend
from hangar.sandbox.gvisor.guard import GuardedProcessBackend  # process, refusing runtimes that ask for gVisor
from hangar.sandbox.state import instance_tag

log = logging.getLogger(__name__)

INSTALL_HINT = (
    "Install what isolated sessions need (Debian, as root): "
    "apt-get install -y bubblewrap util-linux libseccomp2 iproute2 iptables python3.11 "
    "(or `bash scripts/system-deps runtime`, which `make run` does), and run `hangar serve` as root."
)
NO_ISOLATION_WARNING = (
    "sandbox backend 'process': NO ISOLATION. Agents run as plain host processes of this server's user and can "
    "read its files, reach every host port and see every process. Use it only on a development machine."
)


class SandboxUnavailableError(RuntimeError):
    """The host cannot run the isolating backend that the settings ask for (``auto`` or ``namespace``)."""


def namespace_unsupported_reason() -> str | None:
    """Why the namespace backend cannot run here, or None when it can."""
    if not sys.platform.startswith("linux"):
        return f"namespaces need Linux (this is {sys.platform})"
    from hangar.sandbox.namespace.host import unsupported_reason

    return unsupported_reason()


def missing_for_isolation() -> list[str]:
    """Everything this host lacks for the namespace backend, not only the first thing a user would trip over."""
    if not sys.platform.startswith("linux"):
        return [f"Linux (this is {sys.platform})"]
    from hangar.sandbox.namespace import cgroups, seccomp
    from hangar.sandbox.namespace.host import unsupported_reason

    missing = []
    if os.geteuid() != 0:
        missing.append("root (sessions run under their own uids, in cgroups, on tmpfs mounts)")
    for tool, package in (("bwrap", "bubblewrap"), ("setpriv", "util-linux")):
        if shutil.which(tool) is None:
            missing.append(f"{tool} (Debian package {package})")
    if cgroups.detect() is None:
        missing.append("usable cgroup memory, pids and cpu controllers (v1 or v2)")
    if not seccomp.available():
        missing.append("libseccomp (Debian package libseccomp2)")
    limit = Path("/proc/sys/user/max_user_namespaces")
    if limit.exists() and limit.read_text().strip() == "0":
        missing.append("user namespaces (sysctl user.max_user_namespaces is 0)")
    if not missing:  # everything is there, yet the unprivileged bwrap probe failed: its own words
        reason = unsupported_reason()
        missing += [reason] if reason else []
    return missing


def unavailable_message(choice: str, reason: str) -> str:
    """What a user reads when ``hangar serve`` refuses: what is missing, how to install it, how to opt out."""
    return (
        f"sandbox_backend={choice}: this host cannot isolate sessions: {reason}.\n"
        f"{INSTALL_HINT}\n"
        "To run agents WITHOUT isolation on a development machine, say so explicitly: "
        "`hangar serve --sandbox process` (or HANGAR_SANDBOX_BACKEND=process)."
    )


def prepare_data_dir(data_dir: Path) -> None:
    """Create the data dir so that sandbox uids may traverse it, and check that they can reach it at all.

    The namespace backend runs each session as an unprivileged leased uid that bind-mounts the version's environment
    from ``<data_dir>/versions``: every directory from ``/`` down to the data dir needs search permission for other
    users. Hangar fixes the data dir, which it owns; a closed parent is the user's to open (or to avoid).
    """
    data_dir = data_dir.resolve()
    data_dir.mkdir(parents=True, exist_ok=True)
    mode = data_dir.stat().st_mode
    if data_dir.stat().st_uid == os.geteuid() and not mode & stat.S_IXOTH:
        data_dir.chmod(stat.S_IMODE(mode) | stat.S_IXOTH)  # traverse only: listing stays closed
    for path in (data_dir, *data_dir.parents):
        info = path.stat()
        if not info.st_mode & stat.S_IXOTH:
            raise SandboxUnavailableError(
                f"the data dir {data_dir} is not reachable by sandbox uids: {path} "
                f"(mode {stat.S_IMODE(info.st_mode):04o}, owner uid {info.st_uid}) does not let other users traverse "
                f"it, so sessions would fail at their first invoke. Fix: `chmod o+x {path}`, or choose a data dir "
                "outside it (--data-dir or HANGAR_DATA_DIR)."
            )


def preflight(settings: Settings) -> None:
    """Everything ``hangar serve`` must know before it serves: the isolation the settings ask for is possible here,
    and sandboxes can reach the data dir. Raises SandboxUnavailableError with the fix; no-op for ``process``."""
    choice = settings.sandbox_backend
    if choice == "process":
        return
    reason = namespace_unsupported_reason()
    if reason is not None:
        missing = missing_for_isolation() or [reason]
        raise SandboxUnavailableError(unavailable_message(choice, "missing " + "; ".join(missing)))
    if choice == "gvisor":
        from hangar.sandbox.gvisor.host import unsupported_reason as gvisor_reason

        if (reason := gvisor_reason(settings.gvisor_runsc, settings.gvisor_platform)) is not None:
            raise SandboxUnavailableError(unavailable_message(choice, reason))
    prepare_data_dir(settings.data_dir)


def select_backend(settings: Settings) -> SandboxBackend:
    """``auto`` and ``namespace``: the namespace backend, or SandboxUnavailableError; ``process``: no isolation."""
    choice = settings.sandbox_backend
    tag = instance_tag(settings.data_dir)
    if choice in ("auto", "namespace", "gvisor"):
        preflight(settings)
        if settings.cgroup_favor_dynmods:
            from hangar.sandbox.namespace.dynmods import favor_dynmods

            log.info(
                "cgroup2 favordynmods (cold launches join cgroups without an RCU grace period): %s", favor_dynmods()
            )
        from hangar.sandbox.gvisor.routing import isolating_backend

        return isolating_backend(settings, tag)
    log.warning(NO_ISOLATION_WARNING)
    return GuardedProcessBackend(
        state_root=Path(tempfile.gettempdir()) / f"hangar-{tag}", start_timeout_s=settings.session_start_timeout_s
    )
