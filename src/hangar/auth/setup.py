"""Wire the inbound-auth components into ``Services`` and make sure an admin key exists."""

from __future__ import annotations

from hangar.auth.bootstrap import ensure_admin_key
from hangar.auth.credentials import CredentialStore
from hangar.auth.jwt import JwtAuthorizer
from hangar.auth.sigv4 import SigV4Verifier
from hangar.auth.vault import open_vault
from hangar.services import Services


def wire(services: Services) -> None:
    settings = services.settings
    vault = open_vault(settings.data_dir / "vault.key")
    services.credentials = CredentialStore(services.engine, vault, settings.account_id)
    ensure_admin_key(services.credentials, settings.credentials_file)
    services.sigv4 = SigV4Verifier(services.credentials, settings.region)
    services.jwt = JwtAuthorizer()
