"""panva ``oidc-provider`` (Node, OpenID Certified) as a real IdP: client_credentials, RS256 JWT access tokens.

The package is installed with npm into ``tests/.cache/oidc-provider`` (gitignored) on first use; Node comes from
``scripts/system-deps test``. Tokens carry ``aud`` = the resource indicator below, ``client_id``, ``scope`` and two
custom claims used by the authorizer tests.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

from tests.support.idp_common import CACHE_DIR, RunningIdp, new_rsa_key, private_jwk, wait_for_discovery
from tests.support.server import free_port

PACKAGE = "oidc-provider@9"
AUDIENCE = "urn:hangar:test-runtime"
CLIENTS = {"agent-client": "agent-client-secret-0001", "other-client": "other-client-secret-0002"}
SCOPES = ["agent:invoke", "reports:read"]
EXTRA_CLAIMS = {"department": "engineering", "groups": ["admins", "devs"]}

# The provider, configured from one JSON document in HANGAR_TEST_IDP (port, keys, clients, scopes, audience).
SCRIPT = """
import Provider from 'oidc-provider';
const cfg = JSON.parse(process.env.HANGAR_TEST_IDP);
const provider = new Provider(`http://127.0.0.1:${cfg.port}`, {
  clients: cfg.clients.map((c) => ({
    client_id: c.id, client_secret: c.secret, grant_types: ['client_credentials'],
    redirect_uris: [], response_types: [], scope: cfg.scopes.join(' '),
  })),
  jwks: { keys: cfg.keys },
  scopes: cfg.scopes,
  features: {
    devInteractions: { enabled: false },
    clientCredentials: { enabled: true },
    resourceIndicators: {
      enabled: true,
      defaultResource: () => cfg.audience,
      useGrantedResource: () => true,
      getResourceServerInfo: () => ({
        scope: cfg.scopes.join(' '), audience: cfg.audience, accessTokenFormat: 'jwt',
        accessTokenTTL: 600, jwt: { sign: { alg: 'RS256' } },
      }),
    },
  },
  extraTokenClaims: () => cfg.extraClaims,
});
provider.listen(cfg.port, '127.0.0.1');
"""


def install(directory: Path = CACHE_DIR / "oidc-provider") -> Path:
    """npm-install oidc-provider once; returns the directory holding the launcher script."""
    if shutil.which("node") is None or shutil.which("npm") is None:
        raise RuntimeError("panva oidc-provider needs node and npm (run scripts/system-deps test as root)")
    directory.mkdir(parents=True, exist_ok=True)
    if not (directory / "node_modules" / "oidc-provider" / "package.json").exists():
        (directory / "package.json").write_text(json.dumps({"private": True, "type": "module"}))
        subprocess.run(
            ["npm", "install", "--no-audit", "--no-fund", "--loglevel=error", PACKAGE],
            cwd=directory,
            check=True,
            timeout=300,
        )
    (directory / "idp.mjs").write_text(SCRIPT)
    return directory


def start_panva(log_dir: Path, port: int | None = None, kid: str = "panva-1") -> RunningIdp:
    directory = install()
    port = port or free_port()
    issuer = f"http://127.0.0.1:{port}"
    key = new_rsa_key()
    config = {
        "port": port,
        "keys": [private_jwk(key, kid)],
        "clients": [{"id": cid, "secret": secret} for cid, secret in CLIENTS.items()],
        "scopes": SCOPES,
        "audience": AUDIENCE,
        "extraClaims": EXTRA_CLAIMS,
    }
    idp = RunningIdp(
        name="panva oidc-provider",
        issuer=issuer,
        discovery_url=f"{issuer}/.well-known/openid-configuration",
        token_url=f"{issuer}/token",
        audience=AUDIENCE,
        clients=dict(CLIENTS),
        log_path=log_dir / f"panva-{port}.log",
        extra={"kid": kid, "key": key},
    )
    log_dir.mkdir(parents=True, exist_ok=True)
    log = open(idp.log_path, "ab")  # noqa: SIM115 - handed to the child process
    env = {**os.environ, "HANGAR_TEST_IDP": json.dumps(config)}
    idp.process = subprocess.Popen(
        ["node", "idp.mjs"], cwd=directory, stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True
    )
    wait_for_discovery(idp)
    return idp
