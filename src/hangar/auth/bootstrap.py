"""First start: an admin access key, written where ``aws``/boto3 can read it (``<data_dir>/credentials``).

The file is an AWS shared-credentials file (profile ``default``), mode 0600. A file whose key is still in the
store with the same secret is kept; otherwise a fresh admin key replaces it, so deleting the file (or the
database) is how an operator who can read the data dir recovers admin access.
"""

from __future__ import annotations

import logging
from pathlib import Path

from hangar.auth.credentials import CredentialStore
from hangar.auth.keyfile import read_credentials_file, write_credentials_file

log = logging.getLogger("hangar.auth")

ADMIN_PRINCIPAL = "admin"


def ensure_admin_key(store: CredentialStore, path: Path) -> str:
    """Return the admin access key id, creating the key and the file when needed."""
    existing = read_credentials_file(path)
    if existing is not None and store.secret_matches(*existing):
        return existing[0]
    key, secret = store.create(ADMIN_PRINCIPAL)
    write_credentials_file(path, key.access_key_id, secret)
    log.info("created admin access key %s; credentials in %s", key.access_key_id, path)
    return key.access_key_id
