"""Can this host run namespace sandboxes? One cached answer, with the reason when it cannot."""

from __future__ import annotations

import os
import shutil
import subprocess
from functools import cache
from pathlib import Path

from hangar.sandbox.namespace import cgroups, rootfs, seccomp

PROBE_UID = 65534
PROBE_TIMEOUT_S = 10


@cache
def unsupported_reason() -> str | None:
    if os.geteuid() != 0:
        return "it needs root (per-sandbox uids, cgroups, tmpfs mounts)"
    for tool in ("bwrap", "setpriv"):
        if shutil.which(tool) is None:
            return f"{tool} is not installed (Debian: bubblewrap, util-linux)"
    if cgroups.detect() is None:
        return "no usable cgroup memory/pids/cpu controllers (v1 or v2)"
    if not seccomp.available():
        return "libseccomp is not installed (Debian: libseccomp2)"
    if Path("/proc/sys/user/max_user_namespaces").read_text().strip() == "0":
        return "user namespaces are disabled (user.max_user_namespaces=0)"
    probe = [
        "setpriv",
        f"--reuid={PROBE_UID}",
        f"--regid={PROBE_UID}",
        "--clear-groups",
        "--nnp",
        "bwrap",
        "--unshare-user",
        "--unshare-pid",
        "--unshare-net",
        *rootfs.system_mounts(),
        "/usr/bin/true",
    ]
    try:
        # SAFETY: runs /usr/bin/true in a throwaway bwrap as nobody (65534) without capabilities.
        result = subprocess.run(probe, capture_output=True, timeout=PROBE_TIMEOUT_S, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"an unprivileged bwrap probe failed: {exc}"
    if result.returncode != 0:
        return f"an unprivileged bwrap probe failed: {result.stderr.decode(errors='replace').strip()}"
    return None
