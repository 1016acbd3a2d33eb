"""Phase 3: decide what to install: the agent's requirements, then whatever the SDK still lacks."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from hangar.artifacts.runtimes import Interpreter

# Looked for at the top of the code dir, first match wins.
REQUIREMENT_FILES = ("requirements.txt", "pyproject.toml")


@dataclass(frozen=True)
class InstallPlan:
    interpreter: Interpreter
    code_dir: Path
    requirements: Path | None  # installed with ``uv pip install -r``; None: the agent declares no dependencies


def resolve(code_dir: Path, interpreter: Interpreter) -> InstallPlan:
    for name in REQUIREMENT_FILES:
        candidate = code_dir / name
        if candidate.is_file() and not candidate.is_symlink():
            return InstallPlan(interpreter, code_dir, candidate)
    return InstallPlan(interpreter, code_dir, None)
