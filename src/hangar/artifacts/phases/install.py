"""Phase 4: the virtualenv, built with uv on the runtime's system interpreter, plus ``hangar.sdk``.

The venv is relocatable (console scripts find their python relative to themselves), so it can be built in a
temporary directory and renamed into place. Packages are copied out of uv's cache, not hard-linked: the built
files are made read-only afterwards, and a hard link would make the cache read-only too. When the package index
is unreachable, an install is retried once with ``--offline`` (uv's cache alone), so a machine that built an
environment before can build it again without network.
"""

from __future__ import annotations

import os
import subprocess
from dataclasses import dataclass
from pathlib import Path

from uv import find_uv_bin

from hangar.artifacts.api import BuildError
from hangar.artifacts.phases.resolve import InstallPlan
from hangar.artifacts.sdk import install_sdk, missing_sdk_dependencies

VENV_TIMEOUT_S = 120
INSTALL_TIMEOUT_S = 900
ERROR_TAIL_LINES = 12
ERROR_TAIL_CHARS = 1500
# What uv prints when it cannot reach a package index (then the build retries from uv's cache alone).
NETWORK_FAILURES = ("error sending request", "tcp connect error", "dns error", "tunnel error", "Failed to fetch")
# Variables of the server's own environment that would point uv at the wrong interpreter or project.
_DROPPED_ENV = ("VIRTUAL_ENV", "CONDA_PREFIX", "PYTHONPATH", "PYTHONHOME", "UV_PROJECT_ENVIRONMENT", "UV_PYTHON")


def install(plan: InstallPlan, env_dir: Path, cache_dir: Path, log: Path) -> None:
    """Create ``env_dir`` and fill it; uv's output goes to ``log``, its tail into the BuildError on failure."""
    env = {key: value for key, value in os.environ.items() if key not in _DROPPED_ENV}
    env.update(UV_CACHE_DIR=str(cache_dir), UV_PYTHON_DOWNLOADS="never", UV_NO_PROGRESS="1", NO_COLOR="1")
    cache_dir.mkdir(parents=True, exist_ok=True)
    uv = _Uv(env, plan.code_dir, log)
    venv = ["venv", "--relocatable", "--no-project", "--python", str(plan.interpreter.path), str(env_dir)]
    uv.run(venv, VENV_TIMEOUT_S, "creating the virtualenv")
    pip = ["pip", "install", "--python", str(env_dir / "bin" / "python"), "--link-mode", "copy", "--compile-bytecode"]
    if plan.requirements is not None:
        uv.install([*pip, "-r", str(plan.requirements)], f"installing {plan.requirements.name}")
    site_packages = _site_packages(env_dir)
    missing = missing_sdk_dependencies(site_packages)
    if missing:
        uv.install([*pip, *missing], "installing the SDK's dependencies")
    install_sdk(site_packages)


def _site_packages(env_dir: Path) -> Path:
    found = sorted((env_dir / "lib").glob("python3.*/site-packages"))
    if len(found) != 1:
        raise BuildError(f"the new virtualenv has {len(found)} site-packages folders; expected one")
    return found[0]


class UvFailed(BuildError):
    """uv exited non-zero; ``output`` is everything it printed."""

    def __init__(self, reason: str, output: str) -> None:
        super().__init__(reason)
        self.output = output


@dataclass(frozen=True)
class _Uv:
    env: dict[str, str]
    cwd: Path
    log: Path

    def install(self, args: list[str], what: str) -> None:
        """``uv pip install``; when the package index cannot be reached, once more from uv's cache alone."""
        try:
            self.run(args, INSTALL_TIMEOUT_S, what)
        except UvFailed as online:
            if not any(sign in online.output for sign in NETWORK_FAILURES):
                raise
            with self.log.open("a") as out:
                out.write("# the package index is unreachable: trying uv's cache alone (--offline)\n")
            try:
                self.run([*args, "--offline"], INSTALL_TIMEOUT_S, what)
            except UvFailed:
                raise UvFailed(
                    f"{online.reason}\n(the package index was unreachable, and uv's cache alone did not satisfy "
                    "the requirements either)",
                    online.output,
                ) from None

    def run(self, args: list[str], timeout: float, what: str) -> None:
        with self.log.open("a") as out:
            out.write(f"$ uv {' '.join(args)}\n")
            out.flush()
            try:
                result = subprocess.run(
                    [find_uv_bin(), *args],
                    cwd=self.cwd,
                    env=self.env,
                    stdout=subprocess.PIPE,
                    stderr=subprocess.STDOUT,
                    timeout=timeout,
                )
            except subprocess.TimeoutExpired:
                raise BuildError(f"{what} took longer than {timeout:.0f}s") from None
            text = result.stdout.decode("utf-8", "replace")
            out.write(text)
        if result.returncode != 0:
            raise UvFailed(f"{what} failed (uv exit code {result.returncode}):\n{_tail(text)}", text)


def _tail(text: str) -> str:
    lines = [line for line in text.strip().splitlines() if line.strip()]
    tail = "\n".join(lines[-ERROR_TAIL_LINES:])
    return tail[-ERROR_TAIL_CHARS:]
