"""Per-sandbox state on the host, found by name: ``<root>/<sandbox_id>/`` holds everything a sandbox owns.

Nothing about a running sandbox lives only in memory: after a crash, a new Hangar process finds every sandbox
of its predecessor by listing the root and reading the small records written here.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import shutil
from dataclasses import dataclass
from pathlib import Path

SANDBOX_ID = re.compile(r"^[a-z0-9-]{1,64}$")
SOCKET_PATH_LIMIT = 107  # sun_path is 108 bytes with the trailing NUL


def instance_tag(data_dir: Path) -> str:
    """Short name of one Hangar installation, so two installations on one host never clean up each other."""
    return hashlib.sha256(str(data_dir.resolve()).encode()).hexdigest()[:8]


@dataclass(frozen=True)
class StateDir:
    path: Path

    @property
    def sandbox_id(self) -> str:
        return self.path.name

    @property
    def run(self) -> Path:
        """Holds the supervisor's listening sockets: root-owned, never visible to or writable by the sandbox."""
        return self.path / "run"

    @property
    def agent_socket(self) -> Path:
        return self.run / "agent.sock"

    @property
    def control_socket(self) -> Path:
        return self.run / "control.sock"

    @property
    def rw(self) -> Path:
        """The writable area (home and tmp); a size-limited tmpfs for namespace sandboxes."""
        return self.path / "rw"

    @property
    def home(self) -> Path:
        return self.rw / "home"

    @property
    def tmp(self) -> Path:
        return self.rw / "tmp"

    @property
    def log(self) -> Path:
        """The agent's and supervisor's stdout and stderr. It lives in the writable area, which the sandbox cannot
        see (only ``home`` and ``tmp`` are bound in) but whose size limit it counts against: an agent that prints
        forever fills its own budget, never the host's /run."""
        return self.rw / "agent.log"

    @property
    def record(self) -> Path:
        return self.path / "sandbox.json"

    def write_record(self, **fields: object) -> None:
        tmp = self.record.with_suffix(".tmp")
        tmp.write_text(json.dumps(fields))
        tmp.replace(self.record)

    def read_record(self) -> dict[str, object]:
        try:
            data = json.loads(self.record.read_text())
        except (OSError, ValueError):
            return {}
        return data if isinstance(data, dict) else {}

    def remove(self) -> None:
        # shutil.rmtree uses fd-relative calls on Linux and never follows a symlink the agent planted.
        shutil.rmtree(self.path, ignore_errors=True)


def create_state(root: Path, sandbox_id: str) -> StateDir:
    if not SANDBOX_ID.match(sandbox_id):
        raise ValueError(f"invalid sandbox id {sandbox_id!r}: expected [a-z0-9-]{{1,64}}")
    root.mkdir(parents=True, exist_ok=True, mode=0o711)
    if root.stat().st_uid != os.getuid():
        raise PermissionError(f"state root {root} belongs to another user")
    state = StateDir(root / sandbox_id)
    if len(str(state.control_socket)) > SOCKET_PATH_LIMIT:
        raise ValueError(f"state root {root} is too long for a Unix socket path")
    state.path.mkdir(mode=0o711)  # FileExistsError: the id is already in use on this host
    state.run.mkdir(mode=0o700)
    return state


def list_states(root: Path) -> list[StateDir]:
    with contextlib.suppress(FileNotFoundError):
        return [StateDir(p) for p in sorted(root.iterdir()) if p.is_dir() and SANDBOX_ID.match(p.name)]
    return []


def process_start_time(pid: int) -> int | None:
    """Start time in clock ticks since boot (field 22 of /proc/PID/stat): tells a pid from a reused one."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return int(stat.rsplit(")", 1)[1].split()[19])


def same_process(pid: int, start_time: object) -> bool:
    return isinstance(start_time, int) and process_start_time(pid) == start_time


def session_members(sid: int) -> list[int]:
    """Pids whose session id is ``sid`` (field 6 of /proc/PID/stat); none where there is no /proc."""
    members: list[int] = []
    if not os.path.isdir("/proc/self"):
        return members
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            stat = Path(entry.path, "stat").read_text()
        except OSError:
            continue
        if int(stat.rsplit(")", 1)[1].split()[3]) == sid:
            members.append(int(entry.name))
    return members
