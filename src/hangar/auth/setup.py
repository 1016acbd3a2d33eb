"""Build the inbound-auth components and make sure an admin key exists."""

from __future__ import annotations

from sqlalchemy.engine import Engine

from hangar.auth.bootstrap import ensure_admin_key
from hangar.auth.credentials import CredentialStore
from hangar.auth.jwt import JwtAuthorizer
from hangar.auth.sigv4 import SigV4Verifier
from hangar.auth.vault import open_vault
from hangar.config import Settings


def build_auth(settings: Settings, engine: Engine) -> tuple[CredentialStore, SigV4Verifier, JwtAuthorizer]:
    """The key store (with the admin key written on first start), its SigV4 verifier and the JWT authorizer."""
    vault = open_vault(settings.data_dir / "vault.key")
    credentials = CredentialStore(engine, vault, settings.account_id)
    ensure_admin_key(credentials, settings.credentials_file)
    return credentials, SigV4Verifier(credentials, settings.region), JwtAuthorizer()
