"""glewlwyd (Debian package, C) as a real IdP: configured from an empty SQLite database through its admin API.

Installed by ``scripts/system-deps test``. Each start gets its own directory, port, database and RSA key. glewlwyd puts
the scope name in ``aud``, the client id in ``sub``/``client_id``, and signs RS256 with a ``kid``.
"""

from __future__ import annotations

import json
import re
import shutil
import sqlite3
import subprocess
from pathlib import Path

import httpx

from tests.support.idp_common import RunningIdp, new_rsa_key, pem_pair, wait_for_discovery
from tests.support.server import free_port

SCHEMA = Path("/usr/share/dbconfig-common/data/glewlwyd/install/sqlite3")
ADMIN_APP = Path("/usr/share/glewlwyd/webapp/admin.js")
SCOPES = ["agent:invoke", "reports:read"]
CLIENTS = {"agent-client": "agent-client-secret-0001", "other-client": "other-client-secret-0002"}

CONFIG = """port={port}
bind_address="127.0.0.1"
external_url="http://127.0.0.1:{port}"
login_url="login.html"
api_prefix="api"
static_files_path="/usr/share/glewlwyd/webapp/"
allow_origin="*"
log_mode="console"
log_level="WARNING"
cookie_secure=0
session_expiration=3600
session_key="GLEWLWYD2_SESSION_ID"
admin_session_authentication="cookie"
profile_session_authentication="cookie"
admin_scope="g_admin"
profile_scope="g_profile"
user_module_path="/usr/lib/glewlwyd/user"
client_module_path="/usr/lib/glewlwyd/client"
user_auth_scheme_module_path="/usr/lib/glewlwyd/scheme"
plugin_module_path="/usr/lib/glewlwyd/plugin"
use_secure_connection=0
hash_algorithm="SHA512"
database = {{ type = "sqlite3" path = "{database}" }};
"""


def oidc_plugin_defaults() -> dict[str, object]:
    """The OIDC plugin parameters the admin web app would send, read from the installed app itself."""
    source = ADMIN_APP.read_text()
    start = source.index('{"oauth-as-iss-id"')
    depth = 0
    for end in range(start, len(source)):
        depth += {"{": 1, "}": -1}.get(source[end], 0)
        if depth == 0:
            break
    literal = source[start : end + 1]
    literal = re.sub(r"!0\b", "true", re.sub(r"!1\b", "false", literal))
    literal = re.sub(r"([{,])([A-Za-z_$][\w$]*):", r'\1"\2":', literal)
    return json.loads(literal)


def start_glewlwyd(work_dir: Path) -> RunningIdp:
    binary = shutil.which("glewlwyd")
    if binary is None or not SCHEMA.exists():
        raise RuntimeError("glewlwyd is not installed (run scripts/system-deps test as root)")
    port = free_port()
    work_dir.mkdir(parents=True, exist_ok=True)
    database = work_dir / "glewlwyd.db"
    with sqlite3.connect(database) as db:
        db.executescript(SCHEMA.read_text())
    (work_dir / "glewlwyd.conf").write_text(CONFIG.format(port=port, database=database))
    issuer = f"http://127.0.0.1:{port}/api/oidc"
    idp = RunningIdp(
        name="glewlwyd",
        issuer=issuer,
        discovery_url=f"{issuer}/.well-known/openid-configuration",
        token_url=f"{issuer}/token",
        audience="agent:invoke",
        clients=dict(CLIENTS),
        log_path=work_dir / "glewlwyd.log",
    )
    log = open(idp.log_path, "ab")  # noqa: SIM115 - handed to the child process
    idp.process = subprocess.Popen(
        [binary, "-c", str(work_dir / "glewlwyd.conf")], stdout=log, stderr=subprocess.STDOUT, start_new_session=True
    )
    try:
        _configure(f"http://127.0.0.1:{port}/api", issuer, idp)
        wait_for_discovery(idp)
        idp.extra["kid"] = httpx.get(f"{issuer}/jwks", timeout=10).json()["keys"][0]["kid"]
    except Exception:
        idp.stop()
        raise
    return idp


def _configure(api: str, issuer: str, idp: RunningIdp) -> None:
    """Admin login (the install script's admin/password), then OIDC plugin, scopes and clients."""
    import time

    deadline = time.monotonic() + 30
    with httpx.Client(timeout=10) as admin:
        while True:
            try:
                login = admin.post(f"{api}/auth/", json={"username": "admin", "password": "password"})
                break
            except httpx.TransportError:
                if (idp.process is not None and idp.process.poll() is not None) or time.monotonic() > deadline:
                    raise RuntimeError(f"glewlwyd did not start:\n{idp.log()}") from None
                time.sleep(0.05)
        _ok(login, "admin login")
        key = new_rsa_key()
        idp.extra["key"] = key
        key_pem, cert_pem = pem_pair(key)
        parameters = oidc_plugin_defaults()
        parameters.update(
            {
                "iss": issuer,
                "jwt-type": "rsa",
                "jwt-key-size": "256",
                "key": key_pem,
                "cert": cert_pem,
                "access-token-duration": 600,
                "allow-non-oidc": True,  # client_credentials is refused (403) without it
                "auth-type-client-enabled": True,
                "allowed-scope": ["openid", *SCOPES],
            }
        )
        plugin = {"module": "oidc", "name": "oidc", "display_name": "OIDC", "enabled": True, "parameters": parameters}
        _ok(admin.post(f"{api}/mod/plugin/", json=plugin), "OIDC plugin")
        for scope in SCOPES:
            body = {
                "name": scope,
                "display_name": scope,
                "description": f"test scope {scope}",
                "password_required": False,
            }
            _ok(admin.post(f"{api}/scope/", json={**body, "scheme": {}}), f"scope {scope}")
        for client_id, secret in CLIENTS.items():
            client = {
                "client_id": client_id,
                "name": client_id,
                "password": secret,
                "confidential": True,
                "enabled": True,
                "authorization_type": ["client_credentials"],
                "token_endpoint_auth_method": ["client_secret_basic"],  # without it the client is "invalid"
                "scope": SCOPES,
                "redirect_uri": [],
            }
            _ok(admin.post(f"{api}/client/?source=database", json=client), f"client {client_id}")


def _ok(response: httpx.Response, what: str) -> None:
    if response.status_code != 200:
        raise RuntimeError(f"glewlwyd setup failed at {what}: {response.status_code} {response.text}")
