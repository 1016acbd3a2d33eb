"""Hostile bearer tokens, each refused with the status it deserves (401 untrusted token, 403 not allowed)."""

from __future__ import annotations

import base64
import json
import time

import jwt
import pytest
from cryptography.hazmat.primitives import serialization

from hangar.auth.jwt import JwtAuthorizer
from tests.auth.jwt_support import authorize, forge, refused, rules_for
from tests.support.idp_common import RunningIdp, new_rsa_key
from tests.support.server import free_port


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def test_forged_token_with_the_idp_key_is_accepted(idp: RunningIdp) -> None:
    """Control: the forging helper makes tokens the authorizer would accept, so each refusal below is meaningful."""
    assert authorize(JwtAuthorizer(), forge(idp), rules_for(idp))


def test_alg_none(idp: RunningIdp) -> None:
    header = _b64(json.dumps({"alg": "none", "typ": "JWT", "kid": idp.extra["kid"]}).encode())
    payload = _b64(json.dumps(jwt.decode(forge(idp), options={"verify_signature": False})).encode())
    refused(JwtAuthorizer(), f"{header}.{payload}.", rules_for(idp), 401, "signed JWT")
    refused(JwtAuthorizer(), f"{header}.{payload}.{_b64(b'x')}", rules_for(idp), 401, "algorithm 'none'")


def test_hs256_signed_with_the_public_key(idp: RunningIdp) -> None:
    public_pem = (
        idp.extra["key"]
        .public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    )
    header = {"alg": "HS256", "typ": "JWT", "kid": idp.extra["kid"]}
    payload = jwt.decode(forge(idp), options={"verify_signature": False})
    signing_input = f"{_b64(json.dumps(header).encode())}.{_b64(json.dumps(payload).encode())}"
    import hashlib
    import hmac

    signature = _b64(hmac.new(public_pem, signing_input.encode(), hashlib.sha256).digest())
    refused(JwtAuthorizer(), f"{signing_input}.{signature}", rules_for(idp), 401, "algorithm 'HS256'")


def test_rs_header_with_an_ec_key_type_mismatch(idp: RunningIdp) -> None:
    from cryptography.hazmat.primitives.asymmetric import ec

    token = forge(idp, key=ec.generate_private_key(ec.SECP256R1()), alg="ES256")
    refused(JwtAuthorizer(), token, rules_for(idp), 401, "cannot verify algorithm ES256")


def test_unknown_kid(idp: RunningIdp) -> None:
    refused(JwtAuthorizer(), forge(idp, key=new_rsa_key(), kid="attacker-key"), rules_for(idp), 401, "kid")


def test_right_kid_wrong_key(idp: RunningIdp) -> None:
    refused(JwtAuthorizer(), forge(idp, key=new_rsa_key()), rules_for(idp), 401, "signature")


def test_expired(idp: RunningIdp) -> None:
    now = int(time.time())
    refused(JwtAuthorizer(), forge(idp, iat=now - 7200, exp=now - 3600), rules_for(idp), 401, "expired")


def test_expiry_within_leeway_is_accepted(idp: RunningIdp) -> None:
    assert authorize(JwtAuthorizer(), forge(idp, exp=int(time.time()) - 20), rules_for(idp))


def test_not_yet_valid(idp: RunningIdp) -> None:
    now = int(time.time())
    refused(JwtAuthorizer(), forge(idp, nbf=now + 3600), rules_for(idp), 401, "not valid yet")
    refused(JwtAuthorizer(), forge(idp, iat=now + 3600, exp=now + 7200), rules_for(idp), 401, "not valid yet")


def test_missing_exp(idp: RunningIdp) -> None:
    token = forge(idp, exp=None)
    refused(JwtAuthorizer(), token, rules_for(idp), 401, "'exp'")


def test_wrong_issuer(idp: RunningIdp) -> None:
    refused(JwtAuthorizer(), forge(idp, iss="https://evil.example/"), rules_for(idp), 401, "not issued by")


def test_wrong_audience(idp: RunningIdp) -> None:
    refused(JwtAuthorizer(), forge(idp, aud="urn:other-service"), rules_for(idp), 401, "audience")


def test_client_not_allowed_via_azp(idp: RunningIdp) -> None:
    token = forge(idp, client_id=None, azp="intruder")
    refused(JwtAuthorizer(), token, rules_for(idp), 403, "client")


def test_scope_in_scp_list_is_understood(idp: RunningIdp) -> None:
    assert authorize(JwtAuthorizer(), forge(idp, scope=None, scp=["agent:invoke"]), rules_for(idp))
    refused(JwtAuthorizer(), forge(idp, scope=None, scp=["other"]), rules_for(idp), 403, "scope")


def test_custom_claim_mismatch(idp: RunningIdp) -> None:
    rule = {
        "inboundTokenClaimName": "tenant",
        "inboundTokenClaimValueType": "STRING",
        "authorizingClaimMatchValue": {"claimMatchOperator": "EQUALS", "claimMatchValue": {"matchValueString": "t1"}},
    }
    assert authorize(JwtAuthorizer(), forge(idp, tenant="t1"), rules_for(idp, customClaims=[rule]))
    refused(JwtAuthorizer(), forge(idp, tenant="t2"), rules_for(idp, customClaims=[rule]), 403, "claim 'tenant'")


def test_tampered_payload_of_a_real_token(idp: RunningIdp) -> None:
    header, payload, signature = idp.token("other-client").split(".")
    claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    claims["client_id"] = "agent-client"
    tampered = f"{header}.{_b64(json.dumps(claims).encode())}.{signature}"
    refused(JwtAuthorizer(), tampered, rules_for(idp), 401, "signature")


@pytest.mark.parametrize(
    "mangle",
    [
        lambda t: t.rsplit(".", 1)[0],  # signature dropped
        lambda t: t[: len(t) // 2],  # cut in the middle
        lambda t: t[:-10],  # signature truncated
        lambda t: "",
        lambda t: "garbage",
        lambda t: "a.b.c",
        lambda t: "e30.e30.e30",  # {} . {} . junk
        lambda t: t.replace(".", "..", 1),
        lambda t: t + "=",
        lambda t: "\u00e9" + t,
    ],
)
def test_truncated_and_garbage_tokens(idp: RunningIdp, mangle) -> None:  # type: ignore[no-untyped-def]
    refused(JwtAuthorizer(), mangle(idp.token("agent-client")), rules_for(idp), 401, "")


def test_oversized_token_is_refused_before_parsing(idp: RunningIdp) -> None:
    token = forge(idp, padding="x" * 20_000)
    refused(JwtAuthorizer(), token, rules_for(idp), 401, "larger than")


def test_jwks_unreachable_fails_closed(idp: RunningIdp) -> None:
    dead = f"http://127.0.0.1:{free_port()}/.well-known/openid-configuration"
    refused(JwtAuthorizer(), idp.token("agent-client"), rules_for(idp, discoveryUrl=dead), 401, "unreachable")


def test_invalid_authorizer_configuration_fails_closed(idp: RunningIdp) -> None:
    refused(JwtAuthorizer(), forge(idp), {"discoveryUrl": "ftp://x"}, 401, "configuration")


def test_oversized_discovery_document_fails_closed(idp: RunningIdp) -> None:
    """A hostile or broken IdP endpoint answering huge documents, with and without Content-Length."""
    import threading
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    class Huge(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            body = b'{"issuer": "' + b"x" * 400_000 + b'"}'
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            if self.path.startswith("/declared/"):
                self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Huge)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        base = f"http://127.0.0.1:{server.server_address[1]}"
        for prefix in ("/declared", "/streamed"):
            rules = rules_for(idp, discoveryUrl=f"{base}{prefix}/.well-known/openid-configuration")
            refused(JwtAuthorizer(), forge(idp), rules, 401, "larger than")
    finally:
        server.shutdown()
        thread.join(timeout=10)
