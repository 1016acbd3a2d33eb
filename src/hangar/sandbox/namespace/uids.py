"""Host uid leases: each sandbox runs as its own unprivileged host uid, so no two sandboxes share file or signal rights.

A lease is a file ``<lease_dir>/<uid>`` created with O_EXCL and holding ``<tag>/<sandbox_id>``; the directory is
host-wide, so two installations on one host never hand out the same uid, and a crashed one's leases are found by
their tag.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

DEFAULT_FIRST_UID = 200_000
DEFAULT_COUNT = 65_536


class UidLeases:
    def __init__(self, lease_dir: Path, tag: str, first: int = DEFAULT_FIRST_UID, count: int = DEFAULT_COUNT) -> None:
        self.lease_dir = lease_dir
        self.tag = tag
        self.first = first
        self.count = count
        self._cursor = 0

    def acquire(self, sandbox_id: str) -> int:
        self.lease_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        owner = f"{self.tag}/{sandbox_id}".encode()
        for step in range(self.count):
            uid = self.first + (self._cursor + step) % self.count
            try:
                fd = os.open(self.lease_dir / str(uid), os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            except FileExistsError:
                continue
            with os.fdopen(fd, "wb") as lease:
                lease.write(owner)
            self._cursor = (uid - self.first + 1) % self.count
            return uid
        raise RuntimeError(f"all {self.count} sandbox uids from {self.first} are leased")

    def release(self, uid: int, sandbox_id: str) -> None:
        """Return ``uid`` if ``sandbox_id`` still holds it (a repeated release never frees someone else's lease)."""
        path = self.lease_dir / str(uid)
        with contextlib.suppress(FileNotFoundError):
            if path.read_bytes() == f"{self.tag}/{sandbox_id}".encode():
                path.unlink()

    def holder(self, uid: int) -> str | None:
        """The sandbox id of this installation holding ``uid``, or None."""
        if not self.first <= uid < self.first + self.count:
            return None
        try:
            tag, _, sandbox_id = (self.lease_dir / str(uid)).read_text().partition("/")
        except OSError:
            return None
        return sandbox_id if tag == self.tag else None

    def owned(self) -> dict[int, str]:
        """uid -> sandbox id of every lease this installation (tag) holds."""
        leases: dict[int, str] = {}
        with contextlib.suppress(FileNotFoundError):
            for path in self.lease_dir.iterdir():
                with contextlib.suppress(OSError, ValueError):
                    tag, _, sandbox_id = path.read_text().partition("/")
                    if tag == self.tag:
                        leases[int(path.name)] = sandbox_id
        return leases
