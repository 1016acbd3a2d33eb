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
    """The commit the run measured, and which files under ``src/`` differed from it (others may be editing)."""

    def git(*args: str) -> str:
        done = subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True, check=False)
        return done.stdout

    return {
        "commit": git("rev-parse", "--short", "HEAD").strip(),
        "uncommitted_in_src": [line[3:] for line in git("status", "--porcelain", "--", "src").splitlines()],
    }
