"""hangar.sdk's identity calls over TLS: the endpoint's certificate is trusted through ``AWS_CA_BUNDLE`` only.

Inside a Hangar session the identity endpoint is TLS under Hangar's own CA, which the sandbox trusts through
``AWS_CA_BUNDLE``. Here a throwaway CA signs a certificate for a loopback TLS endpoint that passes the bytes to a
real ``hangar serve``; both transports (stdlib and botocore) must verify against the bundle and refuse without it.
"""

from __future__ import annotations

import contextlib
import ssl
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from hangar.sdk import BedrockAgentCoreContext, _identity_client, requires_api_key
from tests.sdk.test_identity_decorators import agent_environment
from tests.support.server import HangarServer

WORKLOAD = "sdk-tls-agent"
API_KEY_PROVIDER = "sdk-tls-key"
API_KEY = "sk-tls-0123456789abcdef"


@pytest.fixture(scope="module")
def hangar(tmp_path_factory: pytest.TempPathFactory) -> Iterator[HangarServer]:
    """A real server; these tests start no sandbox, so the process backend spares the data dir's path checks."""
    server = HangarServer(data_dir=tmp_path_factory.mktemp("hangar") / "data", extra_args=["--sandbox", "process"])
    yield server.start()
    server.stop()


@pytest.fixture(scope="module")
def wat(hangar: HangarServer) -> str:
    """A workload access token of a workload allowed to read API_KEY_PROVIDER."""
    control = hangar.boto3_client("bedrock-agentcore-control")
    control.create_workload_identity(name=WORKLOAD)
    control.create_api_key_credential_provider(name=API_KEY_PROVIDER, apiKey=API_KEY)
    data = hangar.boto3_client("bedrock-agentcore")
    return data.get_workload_access_token_for_user_id(workloadName=WORKLOAD, userId="alice")["workloadAccessToken"]


def issue_certificate(directory: Path) -> tuple[Path, Path, Path]:
    """A throwaway CA and a server certificate for localhost / 127.0.0.1 signed by it: (ca, cert, key) PEM files."""
    import datetime as dt
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    now = dt.datetime.now(dt.UTC)
    ca_key, server_key = ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "hangar sdk test CA")])
    ca = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(hours=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(x509.KeyUsage(False, False, False, False, False, True, True, False, False), critical=True)
        .sign(ca_key, hashes.SHA256())
    )
    names = [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
    server = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")]))
        .issuer_name(ca_name)
        .public_key(server_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(hours=1))
        .add_extension(x509.SubjectAlternativeName(names), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    paths = directory / "ca.pem", directory / "server.pem", directory / "server.key"
    paths[0].write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    paths[1].write_bytes(server.public_bytes(serialization.Encoding.PEM))
    paths[2].write_bytes(
        server_key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    return paths


class TlsSplice:
    """Terminates TLS on loopback and passes the bytes unchanged to the Hangar server (what a session's identity
    endpoint does); the signed Host header names this endpoint, so the server verifies exactly what was signed."""

    def __init__(self, target_port: int, cert: Path, key: Path) -> None:
        import socket
        import ssl
        import threading

        self._target_port = target_port
        self._context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        self._context.load_cert_chain(cert, key)
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port = self._listener.getsockname()[1]
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        import socket
        import ssl
        import threading

        while True:
            try:
                raw, _ = self._listener.accept()
            except OSError:
                return  # closed
            try:
                client = self._context.wrap_socket(raw, server_side=True)
            except (ssl.SSLError, OSError):  # a client that does not trust us hangs up during the handshake
                raw.close()
                continue
            upstream = socket.create_connection(("127.0.0.1", self._target_port))
            for source, sink in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pump, args=(source, sink), daemon=True).start()

    @staticmethod
    def _pump(source: Any, sink: Any) -> None:
        try:
            while chunk := source.recv(65536):
                sink.sendall(chunk)
        except OSError:
            pass
        finally:
            for end in (source, sink):
                with contextlib.suppress(OSError):
                    end.close()

    def close(self) -> None:
        self._listener.close()


def test_tls_endpoint_trusted_through_aws_ca_bundle(
    hangar: HangarServer, wat: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    ca, cert, key = issue_certificate(tmp_path)
    splice = TlsSplice(hangar.port, cert, key)
    try:
        endpoint = f"https://localhost:{splice.port}"
        env = {**agent_environment(hangar), "BEDROCK_AGENTCORE_DP_ENDPOINT": endpoint}
        body = {"resourceCredentialProviderName": API_KEY_PROVIDER, "workloadIdentityToken": wat}
        # stdlib transport: verified against the bundle, refused without it (the test CA is in no system store).
        trusted = _identity_client.call_without_botocore(
            "GetResourceApiKey", body, environ={**env, "AWS_CA_BUNDLE": str(ca)}
        )
        assert trusted["apiKey"] == API_KEY
        with pytest.raises(ssl.SSLCertVerificationError):
            _identity_client.call_without_botocore("GetResourceApiKey", body, environ=env)
        # botocore transport, through the decorator: botocore reads AWS_CA_BUNDLE itself.
        for name, value in {**env, "AWS_CA_BUNDLE": str(ca)}.items():
            monkeypatch.setenv(name, value)
        for name in ("AWS_SESSION_TOKEN", "AWS_PROFILE", "DOCKER_CONTAINER", "HANGAR_SANDBOX"):
            monkeypatch.delenv(name, raising=False)

        @requires_api_key(provider_name=API_KEY_PROVIDER)
        def tool(*, api_key: str) -> str:
            return api_key

        BedrockAgentCoreContext.set_workload_access_token(wat)
        try:
            assert tool() == API_KEY
        finally:
            BedrockAgentCoreContext.set_workload_access_token(None)
    finally:
        splice.close()
