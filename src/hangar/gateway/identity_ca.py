"""Hangar's own certificate authority for the identity endpoint inside sandboxes.

The real ``bedrock-agentcore`` SDK only talks to ``https://bedrock-agentcore.<region>.amazonaws.com``; inside a
sandbox that name resolves to loopback and the host terminates TLS with a certificate for it, signed by this CA.
Sandboxes trust the CA through ``AWS_CA_BUNDLE`` (a bundle of the system CAs plus this one), so the agent's other
HTTPS keeps working and nothing outside Hangar's sandboxes ever trusts it. Keys are created on first start, 0600,
under ``<data_dir>/identity-ca``; the server certificate is renewed when its name changes or it nears expiry.
"""

from __future__ import annotations

import datetime as dt
import os
import ssl
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

CA_DAYS = 3650
SERVER_DAYS = 365
RENEW_BEFORE = dt.timedelta(days=30)
SYSTEM_BUNDLES = ("/etc/ssl/certs/ca-certificates.crt", "/etc/pki/tls/certs/ca-bundle.crt")


def _write_private(path: Path, data: bytes) -> None:
    tmp = path.with_suffix(f".{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as out:
        out.write(data)
    tmp.replace(path)


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def _load_key(path: Path) -> ec.EllipticCurvePrivateKey | None:
    try:
        key = serialization.load_pem_private_key(path.read_bytes(), password=None)
    except (OSError, ValueError):
        return None
    return key if isinstance(key, ec.EllipticCurvePrivateKey) else None


def _load_cert(path: Path) -> x509.Certificate | None:
    try:
        return x509.load_pem_x509_certificate(path.read_bytes())
    except (OSError, ValueError):
        return None


class IdentityCA:
    """The CA key and certificate, and a server certificate for ``host``."""

    def __init__(self, directory: Path, host: str) -> None:
        self.directory = directory
        self.host = host
        directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        directory.chmod(0o700)
        self.ca_cert_path = directory / "ca.pem"
        self.server_cert_path = directory / "server.pem"
        self.server_key_path = directory / "server.key"
        self._ensure()

    def _ensure(self) -> None:
        now = dt.datetime.now(dt.UTC)
        ca_key = _load_key(self.directory / "ca.key")
        ca_cert = _load_cert(self.ca_cert_path)
        if ca_key is None or ca_cert is None or ca_cert.not_valid_after_utc - RENEW_BEFORE < now:
            ca_key = ec.generate_private_key(ec.SECP256R1())
            name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "Hangar sandbox identity CA")])
            ca_cert = (
                x509.CertificateBuilder()
                .subject_name(name)
                .issuer_name(name)
                .public_key(ca_key.public_key())
                .serial_number(x509.random_serial_number())
                .not_valid_before(now - dt.timedelta(minutes=5))
                .not_valid_after(now + dt.timedelta(days=CA_DAYS))
                .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
                .add_extension(
                    x509.KeyUsage(False, False, False, False, False, True, True, False, False), critical=True
                )
                .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False)
                .sign(ca_key, hashes.SHA256())
            )
            _write_private(self.directory / "ca.key", _key_pem(ca_key))
            self.ca_cert_path.write_bytes(ca_cert.public_bytes(serialization.Encoding.PEM))
            self.server_cert_path.unlink(missing_ok=True)
        server = _load_cert(self.server_cert_path)
        if (
            server is None
            or _load_key(self.server_key_path) is None
            or server.issuer != ca_cert.subject
            or server.not_valid_after_utc - RENEW_BEFORE < now
            or self.host
            not in server.extensions.get_extension_for_class(x509.SubjectAlternativeName).value.get_values_for_type(
                x509.DNSName
            )
        ):
            self._issue_server(ca_key, ca_cert, now)

    def _issue_server(self, ca_key: ec.EllipticCurvePrivateKey, ca_cert: x509.Certificate, now: dt.datetime) -> None:
        key = ec.generate_private_key(ec.SECP256R1())
        cert = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, self.host)]))
            .issuer_name(ca_cert.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=5))
            .not_valid_after(now + dt.timedelta(days=SERVER_DAYS))
            .add_extension(x509.SubjectAlternativeName([x509.DNSName(self.host)]), critical=False)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False)
            .sign(ca_key, hashes.SHA256())
        )
        _write_private(self.server_key_path, _key_pem(key))
        self.server_cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))

    def server_context(self) -> ssl.SSLContext:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.minimum_version = ssl.TLSVersion.TLSv1_2
        context.load_cert_chain(self.server_cert_path, self.server_key_path)
        return context

    def write_bundle(self, path: Path) -> None:
        """System CAs + this CA, world-readable (sandbox uids read it): what ``AWS_CA_BUNDLE`` points at."""
        system = b""
        for candidate in (ssl.get_default_verify_paths().cafile, *SYSTEM_BUNDLES):
            if candidate and Path(candidate).is_file():
                system = Path(candidate).read_bytes()
                break
        data = system.rstrip(b"\n") + b"\n" + self.ca_cert_path.read_bytes()
        tmp = path.with_suffix(f".{os.getpid()}.tmp")
        tmp.write_bytes(data)
        tmp.chmod(0o644)
        tmp.replace(path)
