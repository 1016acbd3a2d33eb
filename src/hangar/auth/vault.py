"""The installation's symmetric key for secrets at rest (``<data_dir>/vault.key``, mode 0600).

SigV4 verification needs each access key's secret itself (a hash would not do), so secrets are stored
Fernet-encrypted; a copy of the database alone reveals none of them.
"""

from __future__ import annotations

import logging
import os
import stat
from pathlib import Path

from cryptography.fernet import Fernet

log = logging.getLogger("hangar.auth")


def open_vault(path: Path) -> Fernet:
    """Load the key at ``path``, creating it (0600, never overwritten) on first start."""
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        mode = stat.S_IMODE(path.stat().st_mode)
        if mode & 0o077:
            log.warning("%s was readable by others (mode %o); restricting it to 0600", path, mode)
            path.chmod(0o600)
        return Fernet(path.read_bytes().strip())
    with os.fdopen(fd, "wb") as handle:
        handle.write(Fernet.generate_key())
    log.info("created the vault key %s", path)
    return Fernet(path.read_bytes().strip())
