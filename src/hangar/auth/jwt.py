"""The runtime JWT authorizer (``authorizerConfiguration.customJWTAuthorizer``), built on PyJWT.

Order of checks, cheapest and least trusting first: size and shape of the token, its header's algorithm (an
asymmetric one only; never ``none``, never HMAC), the signing key from the IdP's JWKS (its type must fit the
algorithm), signature, issuer (= the discovery document's), ``exp``/``nbf``/``iat`` with a small leeway, then the
runtime's rules: ``allowedAudience`` vs ``aud``, ``allowedClients`` vs ``client_id``/``azp``, ``allowedScopes`` vs
``scope``/``scp`` (any one of them suffices), and every ``customClaims`` rule.

A token that cannot be trusted or was not issued for this runtime is a 401 UnauthorizedException; a valid token
whose holder is not allowed (client, scope, custom claim) is a 403 AccessDeniedException (RFC 6750's
invalid_token vs insufficient_scope).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

import jwt as pyjwt
from jwt.api_jwk import PyJWK

from hangar.auth.jwks import JwksCache, KeySetError
from hangar.domain.errors import AccessDeniedError, FieldProblem, UnauthorizedError, ValidationError

MAX_TOKEN_BYTES = 16 * 1024
LEEWAY_S = 60
_COMPACT_JWS = re.compile(r"^[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+$")
# Which JWS algorithms a key of each type may verify; the token's "alg" must be one of its key's.
_ALGORITHMS = {
    "RSA": {"RS256", "RS384", "RS512", "PS256", "PS384", "PS512"},
    "EC": {"ES256", "ES384", "ES512"},
    "OKP": {"EdDSA"},
}
_EC_CURVES = {"ES256": "P-256", "ES384": "P-384", "ES512": "P-521"}
_ACCEPTED = set().union(*_ALGORITHMS.values())
_OPERATORS = {"STRING": ("EQUALS",), "STRING_ARRAY": ("CONTAINS", "CONTAINS_ANY")}


@dataclass(frozen=True)
class ClaimRule:
    claim: str
    value_type: str  # STRING | STRING_ARRAY
    operator: str  # EQUALS (STRING) | CONTAINS | CONTAINS_ANY (STRING_ARRAY)
    values: tuple[str, ...]

    def holds(self, claims: dict[str, Any]) -> bool:
        actual = claims.get(self.claim)
        if self.value_type == "STRING":
            return isinstance(actual, str) and actual == self.values[0]
        if not isinstance(actual, list) or not all(isinstance(item, str) for item in actual):
            return False
        if self.operator == "CONTAINS":
            return self.values[0] in actual
        return any(value in actual for value in self.values)


@dataclass(frozen=True)
class JwtRules:
    """A ``customJWTAuthorizer`` document, checked once and made typed."""

    discovery_url: str
    audiences: tuple[str, ...] = ()
    clients: tuple[str, ...] = ()
    scopes: tuple[str, ...] = ()
    claims: tuple[ClaimRule, ...] = ()

    @classmethod
    def parse(cls, document: dict[str, Any]) -> JwtRules:
        """Validate the AWS shape (the control plane may call this at create/update time); ValidationError if bad."""
        problems: list[FieldProblem] = []
        url = document.get("discoveryUrl")
        if not isinstance(url, str) or not re.match(
            r"^https?://[^\s?#]+/\.well-known/(openid-configuration|oauth-authorization-server)(/[^\s?#]+)?$", url
        ):
            problems.append(FieldProblem("discoveryUrl", "must be an http(s) URL ending in /.well-known/..."))
        lists = {}
        for name in ("allowedAudience", "allowedClients", "allowedScopes"):
            value = document.get(name, [])
            if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
                problems.append(FieldProblem(name, "must be a list of non-empty strings"))
                value = []
            lists[name] = tuple(value)
        rules = []
        for index, item in enumerate(document.get("customClaims") or []):
            rule = _parse_claim_rule(item)
            if rule is None:
                problems.append(FieldProblem(f"customClaims[{index}]", "is not a valid claim rule"))
            else:
                rules.append(rule)
        if problems or not isinstance(url, str):  # url is a str whenever problems is empty
            raise ValidationError("Invalid customJWTAuthorizer configuration", fields=problems)
        return cls(url, lists["allowedAudience"], lists["allowedClients"], lists["allowedScopes"], tuple(rules))


@dataclass(frozen=True)
class VerifiedToken:
    subject: str | None
    client_id: str | None
    claims: dict[str, Any]


class JwtAuthorizer:
    """Verify bearer tokens against a runtime's rules; keys come from a cache shared by all runtimes."""

    def __init__(self, jwks: JwksCache | None = None) -> None:
        self.jwks = jwks or JwksCache()

    async def authorize(self, token: str, authorizer: dict[str, Any]) -> VerifiedToken:
        try:
            rules = JwtRules.parse(authorizer)
        except ValidationError:
            raise UnauthorizedError("The runtime's JWT authorizer configuration is invalid") from None
        if len(token) > MAX_TOKEN_BYTES:
            raise UnauthorizedError(f"The bearer token is larger than {MAX_TOKEN_BYTES} bytes")
        if not _COMPACT_JWS.match(token):
            raise UnauthorizedError("The bearer token is not a signed JWT (header.payload.signature)")
        try:
            header = pyjwt.get_unverified_header(token)
        except pyjwt.PyJWTError:
            raise UnauthorizedError("The bearer token's header cannot be decoded") from None
        algorithm = header.get("alg")
        if algorithm not in _ACCEPTED:
            raise UnauthorizedError(f"The bearer token's algorithm {str(algorithm)[:16]!r} is not accepted")
        if "crit" in header:
            raise UnauthorizedError("The bearer token uses critical header extensions, which are not supported")
        kid = header.get("kid")
        if kid is not None and not isinstance(kid, str):
            raise UnauthorizedError("The bearer token's kid is not a string")
        try:
            issuer, jwk = await self.jwks.resolve(rules.discovery_url, kid)
        except KeySetError as exc:
            raise UnauthorizedError(f"The bearer token cannot be verified: {exc}") from None
        claims = _decode(token, _verification_key(jwk, algorithm), algorithm, issuer)
        _check_rules(rules, claims)
        client = claims.get("client_id", claims.get("azp"))
        subject = claims.get("sub")
        return VerifiedToken(
            subject=subject if isinstance(subject, str) else None,
            client_id=client if isinstance(client, str) else None,
            claims=claims,
        )


def _verification_key(jwk: dict[str, Any], algorithm: str) -> Any:
    """The public key, only if its type (and curve, and declared alg) fits the token's algorithm."""
    kty = jwk.get("kty")
    if algorithm not in _ALGORITHMS.get(str(kty), set()):
        raise UnauthorizedError(f"The signing key (type {str(kty)[:8]}) cannot verify algorithm {algorithm}")
    if kty == "EC" and jwk.get("crv") != _EC_CURVES[algorithm]:
        raise UnauthorizedError(f"The signing key's curve does not match algorithm {algorithm}")
    if "alg" in jwk and jwk["alg"] != algorithm:
        raise UnauthorizedError(f"The signing key is declared for {str(jwk['alg'])[:16]}, not {algorithm}")
    if "d" in jwk or "k" in jwk:
        raise UnauthorizedError("The identity provider published private or symmetric key material; refusing it")
    try:
        return PyJWK(jwk, algorithm=algorithm).key
    except pyjwt.PyJWTError:
        raise UnauthorizedError("The identity provider's signing key cannot be loaded") from None


def _decode(token: str, key: Any, algorithm: str, issuer: str) -> dict[str, Any]:
    try:
        return pyjwt.decode(
            token,
            key,
            algorithms=[algorithm],
            issuer=issuer,
            leeway=LEEWAY_S,
            options={"require": ["exp", "iss"], "verify_aud": False},
        )
    except pyjwt.ExpiredSignatureError:
        raise UnauthorizedError("The bearer token has expired") from None
    except pyjwt.ImmatureSignatureError:
        raise UnauthorizedError("The bearer token is not valid yet (nbf or iat is in the future)") from None
    except pyjwt.InvalidIssuerError:
        raise UnauthorizedError("The bearer token was not issued by the runtime's identity provider") from None
    except pyjwt.InvalidSignatureError:
        raise UnauthorizedError("The bearer token's signature does not verify") from None
    except pyjwt.MissingRequiredClaimError as exc:
        raise UnauthorizedError(f"The bearer token lacks the {exc.claim!r} claim") from None
    except pyjwt.PyJWTError:
        raise UnauthorizedError("The bearer token is malformed") from None


def _check_rules(rules: JwtRules, claims: dict[str, Any]) -> None:
    if rules.audiences:
        audience = claims.get("aud")
        audiences = [audience] if isinstance(audience, str) else audience if isinstance(audience, list) else []
        if not any(isinstance(a, str) and a in rules.audiences for a in audiences):
            raise UnauthorizedError("The bearer token's audience is not allowed for this runtime")
    if rules.clients:
        client = claims.get("client_id", claims.get("azp"))
        if not isinstance(client, str) or client not in rules.clients:
            raise AccessDeniedError("The bearer token's client is not allowed for this runtime")
    if rules.scopes and not set(_scopes(claims)) & set(rules.scopes):
        raise AccessDeniedError("The bearer token has none of the scopes this runtime requires")
    for rule in rules.claims:
        if not rule.holds(claims):
            raise AccessDeniedError(f"The bearer token's claim {rule.claim!r} does not satisfy the runtime's rule")


def _scopes(claims: dict[str, Any]) -> list[str]:
    found: list[str] = []
    for name in ("scope", "scp"):
        value = claims.get(name)
        if isinstance(value, str):
            found += value.split()
        elif isinstance(value, list):
            found += [item for item in value if isinstance(item, str)]
    return found


def _parse_claim_rule(item: object) -> ClaimRule | None:
    if not isinstance(item, dict):
        return None
    name = item.get("inboundTokenClaimName")
    value_type = item.get("inboundTokenClaimValueType")
    match = item.get("authorizingClaimMatchValue")
    if not isinstance(name, str) or not name or value_type not in _OPERATORS or not isinstance(match, dict):
        return None
    operator = match.get("claimMatchOperator")
    value = match.get("claimMatchValue")
    if operator not in _OPERATORS[value_type] or not isinstance(value, dict) or len(value) != 1:
        return None
    if operator == "CONTAINS_ANY":
        values = value.get("matchValueStringList")
        if not isinstance(values, list) or not values or not all(isinstance(v, str) and v for v in values):
            return None
        return ClaimRule(name, value_type, operator, tuple(values))
    single = value.get("matchValueString")
    if not isinstance(single, str) or not single:
        return None
    return ClaimRule(name, value_type, operator, (single,))
