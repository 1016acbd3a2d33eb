"""Tokens issued by real identity providers (panva oidc-provider, glewlwyd) pass the runtime JWT authorizer."""

from __future__ import annotations

from hangar.auth.jwks import JwksCache
from hangar.auth.jwt import JwtAuthorizer
from tests.auth.jwt_support import authorize, refused, rules_for
from tests.support.idp_common import RunningIdp
from tests.support.idp_panva import start_panva


def test_token_from_the_idp_is_accepted(idp: RunningIdp) -> None:
    verified = authorize(JwtAuthorizer(), idp.token("agent-client"), rules_for(idp))
    assert verified.client_id == "agent-client"
    assert verified.claims["iss"] == idp.issuer


def test_discovery_url_alone_accepts_any_token_of_that_issuer(idp: RunningIdp) -> None:
    assert authorize(JwtAuthorizer(), idp.token("other-client", "reports:read"), {"discoveryUrl": idp.discovery_url})


def test_client_not_allowed_is_403(idp: RunningIdp) -> None:
    refused(JwtAuthorizer(), idp.token("other-client"), rules_for(idp), 403, "client")


def test_missing_scope_is_403(idp: RunningIdp) -> None:
    token = idp.token("agent-client", "reports:read")
    refused(JwtAuthorizer(), token, rules_for(idp, allowedAudience=[idp.audience, "reports:read"]), 403, "scope")


def test_any_allowed_scope_suffices(idp: RunningIdp) -> None:
    token = idp.token("agent-client", "reports:read")
    rules = rules_for(idp, allowedAudience=[idp.audience, "reports:read"], allowedScopes=["x:y", "reports:read"])
    assert authorize(JwtAuthorizer(), token, rules).client_id == "agent-client"


def test_wrong_audience_is_401(idp: RunningIdp) -> None:
    refused(
        JwtAuthorizer(), idp.token("agent-client"), rules_for(idp, allowedAudience=["urn:elsewhere"]), 401, "audience"
    )


def test_custom_claims_from_a_real_token(panva_idp: RunningIdp) -> None:
    def claim(name: str, kind: str, operator: str, value: object) -> dict[str, object]:
        key = "matchValueStringList" if operator == "CONTAINS_ANY" else "matchValueString"
        return {
            "inboundTokenClaimName": name,
            "inboundTokenClaimValueType": kind,
            "authorizingClaimMatchValue": {"claimMatchOperator": operator, "claimMatchValue": {key: value}},
        }

    token = panva_idp.token("agent-client")
    good = [
        claim("department", "STRING", "EQUALS", "engineering"),
        claim("groups", "STRING_ARRAY", "CONTAINS", "admins"),
        claim("groups", "STRING_ARRAY", "CONTAINS_ANY", ["auditors", "devs"]),
    ]
    assert authorize(JwtAuthorizer(), token, rules_for(panva_idp, customClaims=good))
    for bad in (
        claim("department", "STRING", "EQUALS", "sales"),
        claim("groups", "STRING_ARRAY", "CONTAINS", "auditors"),
        claim("groups", "STRING_ARRAY", "CONTAINS_ANY", ["auditors", "owners"]),
        claim("department", "STRING_ARRAY", "CONTAINS", "engineering"),  # a string is not an array
        claim("no_such_claim", "STRING", "EQUALS", "x"),
    ):
        refused(JwtAuthorizer(), token, rules_for(panva_idp, customClaims=[*good, bad]), 403, "claim")


class _Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_key_rotation_refetches_once_and_is_rate_limited(tmp_path) -> None:  # type: ignore[no-untyped-def]
    """A new kid triggers one re-read of the JWKS; another within 30 s does not, one after does."""
    clock = _Clock()
    authorizer = JwtAuthorizer(JwksCache(clock=clock))
    first = start_panva(tmp_path / "a", kid="rot-1")
    port = int(first.issuer.rsplit(":", 1)[1])
    try:
        assert authorize(authorizer, first.token("agent-client"), rules_for(first))
    finally:
        first.stop()
    second = start_panva(tmp_path / "b", port=port, kid="rot-2")
    try:
        assert authorize(authorizer, second.token("agent-client"), rules_for(second))
    finally:
        second.stop()
    third = start_panva(tmp_path / "c", port=port, kid="rot-3")
    try:
        token = third.token("agent-client")
        refused(authorizer, token, rules_for(third), 401, "no signing key with kid 'rot-3'")
        clock.now += 31
        assert authorize(authorizer, token, rules_for(third))
    finally:
        third.stop()


def test_an_unreachable_idp_is_not_asked_again_for_five_seconds(tmp_path) -> None:  # type: ignore[no-untyped-def]
    """Fail closed, then back off: a request arriving right after a failed fetch does not wait on the IdP again."""
    from tests.support.server import free_port

    clock = _Clock()
    authorizer = JwtAuthorizer(JwksCache(clock=clock))
    port = free_port()
    rules = {"discoveryUrl": f"http://127.0.0.1:{port}/.well-known/openid-configuration"}
    refused(authorizer, "eyJhbGciOiJSUzI1NiJ9.e30.c2ln", rules, 401, "unreachable")
    idp = start_panva(tmp_path, port=port)
    try:
        token = idp.token("agent-client")
        refused(authorizer, token, rules, 401, "unreachable")  # still backing off, the IdP was not asked
        clock.now += 6
        assert authorize(authorizer, token, rules).client_id == "agent-client"
    finally:
        idp.stop()
