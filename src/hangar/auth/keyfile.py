"""AWS shared-credentials files (profile ``default``) as Hangar writes them: read leniently, written 0600."""

from __future__ import annotations

import configparser
import os
from pathlib import Path


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
