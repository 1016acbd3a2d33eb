"""What both real identity providers of the test suite look like to a test: issuer, discovery, tokens."""

from __future__ import annotations

import json
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import NameOID

from tests.support.server import end_process, wait_serving

CACHE_DIR = Path(__file__).resolve().parents[1] / ".cache"


@dataclass
class RunningIdp:
    """One IdP process on loopback, with the confidential clients it knows (client_id -> secret)."""

    name: str
    issuer: str
    discovery_url: str
    token_url: str
    audience: str
    clients: dict[str, str]
    process: subprocess.Popen[bytes] | None = None
    log_path: Path | None = None
    extra: dict[str, object] = field(default_factory=dict)

    def token(self, client_id: str, scope: str = "agent:invoke") -> str:
        """A fresh access token for ``client_id`` (client_credentials grant, HTTP Basic client auth)."""
        response = httpx.post(
            self.token_url,
            data={"grant_type": "client_credentials", "scope": scope},
            auth=(client_id, self.clients[client_id]),
            timeout=10,
        )
        if response.status_code != 200:
            raise RuntimeError(f"{self.name} refused a token for {client_id}: {response.status_code} {response.text}")
        return response.json()["access_token"]

    def stop(self) -> None:
        end_process(self.process, timeout=10)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path and self.log_path.exists() else ""


def wait_for_discovery(idp: RunningIdp, timeout: float = 30.0) -> None:
    wait_serving(idp.process, idp.discovery_url, idp.name, idp.log, timeout)


def new_rsa_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def private_jwk(key: rsa.RSAPrivateKey, kid: str) -> dict[str, object]:
    from jwt.algorithms import RSAAlgorithm

    jwk = json.loads(RSAAlgorithm.to_jwk(key))
    jwk.update(kid=kid, use="sig", alg="RS256")
    return jwk


def pem_pair(key: rsa.RSAPrivateKey) -> tuple[str, str]:
    """The private key and a self-signed certificate for it, both PEM (what glewlwyd wants)."""
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "hangar-test-idp")])
    now = time.time()
    import datetime as dt

    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(dt.datetime.fromtimestamp(now - 60, dt.UTC))
        .not_valid_after(dt.datetime.fromtimestamp(now + 86400, dt.UTC))
        .sign(key, hashes.SHA256())
    )
    key_pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.TraditionalOpenSSL, serialization.NoEncryption()
    ).decode()
    return key_pem, cert.public_bytes(serialization.Encoding.PEM).decode()
