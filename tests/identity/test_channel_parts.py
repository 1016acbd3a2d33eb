"""The identity channel's parts on their own: the sandboxes' credentials table and Hangar's CA."""

from __future__ import annotations

import ssl
import stat
from pathlib import Path

from cryptography import x509

from hangar.domain.invocation import InvocationTarget
from hangar.gateway.identity_ca import IdentityCA
from hangar.sessions.identity import CREDENTIALS_TTL_S, SandboxIdentities, identity_host
from tests.support.agent_env import make_target


class Clock:
    def __init__(self) -> None:
        self.now = 1_000_000.0

    def __call__(self) -> float:
        return self.now


def _target(tmp_path: Path, runtime_id: str = "rt-1") -> InvocationTarget:
    return make_target(tmp_path, "identitysdk", runtime_id=runtime_id)


def test_keys_are_minted_once_renewed_late_and_the_old_ones_stay_valid_until_they_expire(tmp_path: Path) -> None:
    clock = Clock()
    table = SandboxIdentities("us-west-2", tmp_path, clock=clock)
    assert table.credentials("hs-a") is None  # never bound: nothing to mint
    table.bind("hs-a", _target(tmp_path))
    first = table.credentials("hs-a")
    assert first is not None and first.access_key_id.startswith("ASIA") and len(first.access_key_id) == 20
    assert table.credentials("hs-a") == first  # fetched again: the same key
    clock.now += CREDENTIALS_TTL_S * 0.6  # 24 of 60 minutes left: still the same key
    assert table.credentials("hs-a") == first
    clock.now += CREDENTIALS_TTL_S * 0.1  # 18 minutes left, before botocore's first ask at 15: renewed
    second = table.credentials("hs-a")
    assert second is not None and second.access_key_id != first.access_key_id
    found = table.by_access_key(first.access_key_id)
    assert found is not None and found[0].sandbox_id == "hs-a"  # a client still holding the old key keeps working
    clock.now = first.expires_at + 1
    assert table.by_access_key(first.access_key_id) is None  # expired
    assert table.by_access_key(second.access_key_id) is not None
    table.forget("hs-a")
    assert table.by_access_key(second.access_key_id) is None and table.credentials("hs-a") is None


def test_a_binding_follows_a_renamed_fork_and_learns_its_session(tmp_path: Path) -> None:
    table = SandboxIdentities("us-west-2", tmp_path)
    table.bind("hs-planned", _target(tmp_path, "rt-2"))
    table.rename("hs-planned", "hs-spare")
    table.claim("hs-spare", "session-1")
    assert table.binding("hs-planned") is None
    binding = table.binding("hs-spare")
    assert binding is not None and (binding.workload, binding.session_id) == ("rt-2", "session-1")


def test_authorization_tokens_are_per_runtime_version_and_the_environment_points_at_the_channel(
    tmp_path: Path,
) -> None:
    table = SandboxIdentities("eu-west-1", tmp_path)
    one, other = _target(tmp_path, "rt-a"), _target(tmp_path, "rt-b")
    assert table.authorization_token(one.runtime_id, "1") != table.authorization_token(other.runtime_id, "1")
    assert table.authorization_token(one.runtime_id, "1") != table.authorization_token(one.runtime_id, "2")
    env = table.environment(one)
    assert env["BEDROCK_AGENTCORE_DP_ENDPOINT"] == "https://bedrock-agentcore.eu-west-1.amazonaws.com:9443"
    assert env["AWS_CONTAINER_AUTHORIZATION_TOKEN"] == table.authorization_token(one.runtime_id, one.version)
    outbound = table.outbound()
    assert outbound is not None and outbound.hosts == ("bedrock-agentcore.eu-west-1.amazonaws.com",)
    nothing = SandboxIdentities("eu-west-1", None)  # a backend without the channel: no variables, no ports
    assert nothing.environment(one) == {} and nothing.outbound() is None


def test_the_ca_keeps_its_keys_private_and_issues_a_certificate_the_bundle_verifies(tmp_path: Path) -> None:
    host = identity_host("us-west-2")
    ca = IdentityCA(tmp_path / "ca", host)
    for name in ("ca.key", "server.key"):
        assert stat.S_IMODE((tmp_path / "ca" / name).stat().st_mode) == 0o600
    assert stat.S_IMODE((tmp_path / "ca").stat().st_mode) == 0o700
    cert = x509.load_pem_x509_certificate(ca.server_cert_path.read_bytes())
    names = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value.get_values_for_type(x509.DNSName)
    assert names == [host]
    ca.write_bundle(tmp_path / "bundle.pem")
    assert stat.S_IMODE((tmp_path / "bundle.pem").stat().st_mode) == 0o644
    context = ssl.create_default_context(cafile=str(tmp_path / "bundle.pem"))
    assert any(c["subject"] == ((("commonName", "Hangar sandbox identity CA"),),) for c in context.get_ca_certs())
    assert len(context.get_ca_certs()) > 1  # the system CAs are still there
    again = IdentityCA(tmp_path / "ca", host)  # a restart keeps the CA and the certificate
    assert again.ca_cert_path.read_bytes() == ca.ca_cert_path.read_bytes()
    assert again.server_cert_path.read_bytes() == ca.server_cert_path.read_bytes()
    moved = IdentityCA(tmp_path / "ca", identity_host("eu-west-1"))  # another region: same CA, a new certificate
    assert moved.ca_cert_path.read_bytes() == ca.ca_cert_path.read_bytes()
    cert = x509.load_pem_x509_certificate(moved.server_cert_path.read_bytes())
    assert cert.subject.rfc4514_string() == f"CN={identity_host('eu-west-1')}"
