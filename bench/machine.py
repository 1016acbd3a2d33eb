"""What the numbers were measured on: cores, memory, kernel, Python."""

from __future__ import annotations

import os
import platform
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def describe() -> dict[str, object]:
    mem_kib = 0
    with open("/proc/meminfo") as meminfo:
        for line in meminfo:
            if line.startswith("MemTotal:"):
                mem_kib = int(line.split()[1])
    cpu_model = ""
    with open("/proc/cpuinfo") as cpuinfo:
        for line in cpuinfo:
            if line.startswith("model name"):
                cpu_model = line.split(":", 1)[1].strip()
                break
    return {
        "cores": os.cpu_count(),
        "cpu": cpu_model,
        "memory_gib": round(mem_kib / 1024 / 1024, 1),
        "kernel": platform.release(),
        "python": platform.python_version(),
        "load_avg_at_end": os.getloadavg(),
    }


def source() -> dict[str, object]:
    """The commit the run measured, and which files under ``src/`` differed from it (others may be editing).

    To measure a commit exactly while others edit the checkout: ``git archive HEAD src | tar -x -C DIR`` and run
    with ``PYTHONPATH=DIR/src`` (``hangar_imported_from`` then names DIR)."""

    def git(*args: str) -> str:
        done = subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True, check=False)
        return done.stdout

    import importlib.util

    spec = importlib.util.find_spec("hangar")
    return {
        "hangar_imported_from": str(Path(spec.origin).parent) if spec and spec.origin else None,
        "commit": git("rev-parse", "--short", "HEAD").strip(),
        # only meaningful when the server imports this checkout's src/ (not an exported copy on PYTHONPATH)
        "uncommitted_in_src": [line[3:] for line in git("status", "--porcelain", "--", "src").splitlines()],
        "imports_this_checkout": bool(spec and spec.origin and Path(spec.origin).is_relative_to(ROOT / "src")),
    }
