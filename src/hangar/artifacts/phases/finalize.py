"""Phase 5: check the entry point, compile bytecode, make the version read-only, move it into place atomically."""

from __future__ import annotations

import json
import os
import shutil
import stat
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

from hangar.artifacts.api import BuildError

COMPILE_TIMEOUT_S = 300


def check_entry_shape(entry_point: tuple[str, ...]) -> None:
    if not 1 <= len(entry_point) <= 2 or any(not part or len(part) > 128 for part in entry_point):
        raise BuildError("entryPoint must be a list of 1 or 2 strings of 1-128 characters")


def check_entry_point(entry_point: tuple[str, ...], code_files: set[str], env_dir: Path | None) -> None:
    """``main.py`` (any ``.py`` file) must be in the code dir; otherwise entry[0] is a console script of the
    environment and entry[1] a file of the code dir. ``env_dir`` None: check only what the code dir decides."""
    check_entry_shape(entry_point)
    first = entry_point[0]
    if first.endswith(".py"):
        _code_file(first, code_files)
        return
    if len(entry_point) != 2:
        raise BuildError(
            f"entryPoint {list(entry_point)}: name a .py file of the code (e.g. main.py), "
            "or a console script followed by a file of the code (e.g. opentelemetry-instrument main.py)"
        )
    _code_file(entry_point[1], code_files)
    if env_dir is None:
        return
    if "/" in first or first in (".", ".."):
        raise BuildError(f"entryPoint {first!r} must be the bare name of a console script")
    script = env_dir / "bin" / first
    if not (script.is_file() and os.access(script, os.X_OK)):
        raise BuildError(
            f"entryPoint {first!r} is neither a .py file nor a console script installed by the requirements"
        )


def _code_file(name: str, code_files: set[str]) -> None:
    """``name`` as the agent's working directory sees it: ``main.py``, ``./main.py`` and ``src/app.py`` are fine."""
    parts = [part for part in name.split("/") if part not in ("", ".")]
    if name.startswith("/") or ".." in parts or "/".join(parts) not in code_files:
        raise BuildError(f"entryPoint file {name!r} is not in the code artifact")


def compile_bytecode(env_dir: Path, code_dir: Path, log: Path) -> None:
    """Sandboxes cannot write next to read-only sources, so compile now or pay for it at every start.

    uv compiled what it installed; this covers the copied SDK and the agent's own code."""
    sdk_dirs = list((env_dir / "lib").glob("python3.*/site-packages/hangar"))
    with log.open("a") as out:
        subprocess.run(
            [str(env_dir / "bin" / "python"), "-m", "compileall", "-q", "-j", "0", *map(str, sdk_dirs), str(code_dir)],
            stdout=out,
            stderr=subprocess.STDOUT,
            timeout=COMPILE_TIMEOUT_S,
            check=False,  # the agent's own syntax errors surface when it starts, as on AgentCore
        )


def write_metadata(build_dir: Path, metadata: dict[str, object]) -> None:
    (build_dir / "build.json").write_text(json.dumps({**metadata, "builtAt": time.time()}, indent=2) + "\n")


def make_read_only(root: Path) -> None:
    """Files 0444 (0555 if executable), folders 0555: readable by every sandbox uid, writable by nobody."""
    for dirpath, dirnames, filenames in os.walk(root, topdown=False):
        for name in filenames + dirnames:
            path = os.path.join(dirpath, name)
            mode = os.lstat(path).st_mode
            if stat.S_ISLNK(mode):
                continue
            executable = stat.S_ISDIR(mode) or mode & 0o100
            os.chmod(path, 0o555 if executable else 0o444)
    os.chmod(root, 0o555)


def publish(build_dir: Path, final_dir: Path) -> bool:
    """Rename the finished build into place; False when an identical build got there first (ours is removed)."""
    try:
        os.rename(build_dir, final_dir)
    except OSError:
        if not final_dir.is_dir():
            raise
        remove_tree(build_dir)
        return False
    return True


def remove_tree(path: Path) -> None:
    """Delete a build, read-only parts included (non-root users need write permission to unlink)."""

    def make_writable(function: Callable[[str], object], target: str, _exc_info: object) -> None:
        os.chmod(os.path.dirname(target), 0o755)
        if os.path.isdir(target) and not os.path.islink(target):
            os.chmod(target, 0o755)
        function(target)

    if path.exists() or path.is_symlink():
        try:
            shutil.rmtree(path, onerror=make_writable)
        except OSError as exc:
            raise BuildError(f"cannot remove the unfinished build {path}: {exc}") from None
