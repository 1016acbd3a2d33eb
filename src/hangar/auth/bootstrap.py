"""First start: an admin access key, written where ``aws``/boto3 can read it (``<data_dir>/credentials``).

The file is an AWS shared-credentials file (profile ``default``), mode 0600. A file whose key is still in the
store with the same secret is kept; otherwise a fresh admin key replaces it, so deleting the file (or the
database) is how an operator who can read the data dir recovers admin access.
"""

from __future__ import annotations

import configparser
import logging
import os
from pathlib import Path

from hangar.auth.credentials import CredentialStore

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


def read_credentials_file(path: Path, profile: str = "default") -> tuple[str, str] | None:
    parser = configparser.ConfigParser(interpolation=None)
    try:
        parser.read_string(path.read_text())
    except (FileNotFoundError, configparser.Error):
        return None
    section = parser[profile] if parser.has_section(profile) else None
    if section is None or "aws_access_key_id" not in section or "aws_secret_access_key" not in section:
        return None
    return section["aws_access_key_id"].strip(), section["aws_secret_access_key"].strip()


def write_credentials_file(path: Path, access_key_id: str, secret: str) -> None:
    """Write atomically with mode 0600 from the start (never briefly world-readable)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(f"[default]\naws_access_key_id = {access_key_id}\naws_secret_access_key = {secret}\n")
    os.chmod(temporary, 0o600)
    os.replace(temporary, path)
