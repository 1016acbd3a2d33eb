"""Which interpreter builds each AgentCore ``runtime``: world-readable ones under /usr/bin only.

Sandboxes run agents as unprivileged uids that cannot read /root (where pyenv lives), so an environment built
on a private interpreter would not start. Debian's ``/usr/bin/python3.X`` is readable by everyone.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from hangar.artifacts.api import BuildError

SYSTEM_BIN = Path("/usr/bin")
PYTHON_RUNTIMES = {f"PYTHON_3_{minor}": f"python3.{minor}" for minor in (10, 11, 12, 13, 14)}
ALL_RUNTIMES = (*PYTHON_RUNTIMES, "NODE_22")


@dataclass(frozen=True)
class Interpreter:
    runtime: str
    path: Path


def available_runtimes(bin_dir: Path = SYSTEM_BIN) -> list[str]:
    """Python runtimes with an interpreter on this host (NODE_22 is not built by Hangar yet)."""
    return [runtime for runtime, name in PYTHON_RUNTIMES.items() if _usable(bin_dir / name)]


def interpreter_for(runtime: str, bin_dir: Path = SYSTEM_BIN) -> Interpreter:
    """The interpreter for ``runtime``, or a BuildError naming the runtimes this host can build."""
    available = ", ".join(available_runtimes(bin_dir)) or "none"
    name = PYTHON_RUNTIMES.get(runtime)
    if name is None:
        if runtime in ALL_RUNTIMES:
            raise BuildError(f"runtime {runtime} is not supported by Hangar's builder yet; available: {available}")
        raise BuildError(f"unknown runtime {runtime!r}; available: {available}")
    path = bin_dir / name
    if not _usable(path):
        raise BuildError(f"runtime {runtime} is not available on this host; available: {available}")
    return Interpreter(runtime, path)


def _usable(path: Path) -> bool:
    """Executable by everyone, not just by us (root can execute anything with any x bit)."""
    try:
        mode = path.stat().st_mode
    except OSError:
        return False
    return path.is_file() and bool(mode & 0o001) and os.access(path, os.X_OK)
