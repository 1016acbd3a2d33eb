"""A panva ``oidc-provider`` for the identity data-plane tests: client credentials, authorization code + PKCE with
refresh tokens (its dev login/consent forms, driven by httpx playing the browser), RFC 8693 token exchange and the
RFC 7523 JWT authorization grant.

oidc-provider has neither grant of its own; ``registerGrantType`` (its documented extension point) adds them here:
the subject token (assertion) must be a JWT this IdP signed; the answer is a new JWT for the same subject, for token
exchange with an ``act`` claim naming the actor (the client, or the client of a verified ``actor_token``). Tokens
live ``ttl`` seconds (short, so expiry and refresh are tested for real).
"""

from __future__ import annotations

import json
import os
import re
import subprocess
from html import unescape
from pathlib import Path
from urllib.parse import urljoin

import httpx

from tests.support.idp_common import RunningIdp, new_rsa_key, private_jwk, wait_for_discovery
from tests.support.idp_panva import install
from tests.support.server import free_port

AUDIENCE = "urn:hangar:test-resource"
SCOPES = ["agent:invoke", "reports:read"]
M2M_CLIENT = ("m2m-client", "m2m-client-secret-0001")
WEB_CLIENT = ("web-client", "web-client-secret-0002")
EXCHANGE_CLIENT = ("exchange-client", "exchange-client-secret-0003")
PUBLIC_EXCHANGE_CLIENT = "public-exchange-client"  # no secret: token_endpoint_auth_method none
TOKEN_EXCHANGE = "urn:ietf:params:oauth:grant-type:token-exchange"

SCRIPT = """
import Provider from 'oidc-provider';
import { jwtVerify, SignJWT, importJWK, createLocalJWKSet } from 'jose';
const cfg = JSON.parse(process.env.HANGAR_TEST_IDP);
const issuer = `http://127.0.0.1:${cfg.port}`;
const TE = 'urn:ietf:params:oauth:grant-type:token-exchange';
const JB = 'urn:ietf:params:oauth:grant-type:jwt-bearer';
const scope = ['openid', 'offline_access', ...cfg.scopes].join(' ');
const provider = new Provider(issuer, {
  clients: [
    { client_id: cfg.m2m[0], client_secret: cfg.m2m[1], grant_types: ['client_credentials'],
      redirect_uris: [], response_types: [], scope },
    { client_id: cfg.web[0], client_secret: cfg.web[1], grant_types: ['authorization_code', 'refresh_token'],
      redirect_uris: cfg.redirectUris, response_types: ['code'], scope },
    { client_id: cfg.exchange[0], client_secret: cfg.exchange[1], grant_types: [TE, JB, 'client_credentials'],
      redirect_uris: [], response_types: [], scope },
    { client_id: cfg.publicExchange, token_endpoint_auth_method: 'none', grant_types: [TE],
      redirect_uris: [], response_types: [], scope },
  ],
  jwks: { keys: cfg.keys },
  scopes: ['openid', 'offline_access', ...cfg.scopes],
  findAccount: (ctx, id) => ({ accountId: id, claims: () => ({ sub: id }) }),
  features: {
    devInteractions: { enabled: true },
    clientCredentials: { enabled: true },
    resourceIndicators: {
      enabled: true,
      defaultResource: () => cfg.audience,
      useGrantedResource: () => true,
      getResourceServerInfo: () => ({
        scope: cfg.scopes.join(' '), audience: cfg.audience, accessTokenFormat: 'jwt',
        accessTokenTTL: cfg.ttl, jwt: { sign: { alg: 'RS256' } },
      }),
    },
  },
});
const publicKeys = createLocalJWKSet({ keys: cfg.keys.map(({ d, p, q, dp, dq, qi, key_ops, ...pub }) => pub) });
const signingKey = await importJWK(cfg.keys[0], 'RS256');
async function verified(ctx, token, what) {
  try {
    return (await jwtVerify(token, publicKeys, { issuer })).payload;
  } catch (err) {
    console.log(`${what} refused: ${err}`);
    ctx.status = 400;
    ctx.body = { error: 'invalid_grant', error_description: `${what} is not a valid token of this issuer` };
    return null;
  }
}
async function issue(ctx, subject, act, audience, scope) {
  const client = ctx.oidc.client.clientId;
  const token = await new SignJWT({ scope: scope || '', client_id: client, act })
    .setProtectedHeader({ alg: 'RS256', kid: cfg.keys[0].kid, typ: 'at+jwt' })
    .setIssuer(issuer).setSubject(subject).setAudience(audience || cfg.audience)
    .setIssuedAt().setExpirationTime(`${cfg.ttl}s`).setJti(crypto.randomUUID()).sign(signingKey);
  ctx.body = { access_token: token, issued_token_type: 'urn:ietf:params:oauth:token-type:access_token',
               token_type: 'Bearer', expires_in: cfg.ttl };
}
provider.registerGrantType(TE, async (ctx) => {
  const params = ctx.oidc.params;
  const subject = await verified(ctx, params.subject_token, 'subject_token');
  if (!subject) return;
  let actor = ctx.oidc.client.clientId;
  if (params.actor_token) {
    const found = await verified(ctx, params.actor_token, 'actor_token');
    if (!found) return;
    actor = found.client_id;
    console.log(`token-exchange actor ${actor}`);
  }
  console.log(`token-exchange for ${subject.sub} by ${ctx.oidc.client.clientId}`);
  await issue(ctx, subject.sub, { sub: actor }, params.audience, params.scope);
}, new Set(['subject_token', 'subject_token_type', 'requested_token_type', 'actor_token', 'actor_token_type',
            'audience', 'scope']));
provider.registerGrantType(JB, async (ctx) => {
  const params = ctx.oidc.params;
  const subject = await verified(ctx, params.assertion, 'assertion');
  if (!subject) return;
  console.log(`jwt-bearer for ${subject.sub} by ${ctx.oidc.client.clientId}`);
  await issue(ctx, subject.sub, undefined, params.audience, params.scope);
}, new Set(['assertion', 'audience', 'scope']));
provider.on('grant.success', (ctx) => console.log(`grant.success ${ctx.oidc.params.grant_type}`));
provider.listen(cfg.port, '127.0.0.1');
"""


def start_flow_idp(log_dir: Path, redirect_uris: list[str], ttl: int, port: int | None = None) -> RunningIdp:
    directory = install()
    (directory / "idp_flows.mjs").write_text(SCRIPT)
    port = port or free_port()
    issuer = f"http://127.0.0.1:{port}"
    key = new_rsa_key()
    config = {
        "port": port,
        "keys": [private_jwk(key, "flows-1")],
        "m2m": M2M_CLIENT,
        "web": WEB_CLIENT,
        "exchange": EXCHANGE_CLIENT,
        "publicExchange": PUBLIC_EXCHANGE_CLIENT,
        "redirectUris": redirect_uris,
        "scopes": SCOPES,
        "audience": AUDIENCE,
        "ttl": ttl,
    }
    idp = RunningIdp(
        name="panva oidc-provider (flows)",
        issuer=issuer,
        discovery_url=f"{issuer}/.well-known/openid-configuration",
        token_url=f"{issuer}/token",
        audience=AUDIENCE,
        clients=dict([M2M_CLIENT, WEB_CLIENT, EXCHANGE_CLIENT]),
        log_path=log_dir / f"panva-flows-{port}.log",
    )
    log_dir.mkdir(parents=True, exist_ok=True)
    log = open(idp.log_path, "ab")  # noqa: SIM115 - handed to the child process
    env = {**os.environ, "HANGAR_TEST_IDP": json.dumps(config)}
    idp.process = subprocess.Popen(
        ["node", "idp_flows.mjs"], cwd=directory, stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True
    )
    wait_for_discovery(idp)
    return idp


def grants(idp: RunningIdp, grant_type: str) -> int:
    """How many tokens the IdP issued with ``grant_type`` (from its log)."""
    return idp.log().count(f"grant.success {grant_type}")


_PROMPT = re.compile(r'name="prompt" value="(\w+)"')


def consent(authorization_url: str, login: str, stop_at: str) -> str:
    """Play the user's browser at panva's dev interactions: log in as ``login``, consent; returns the URL the IdP
    finally redirects to (which starts with ``stop_at``), without following it."""
    with httpx.Client(timeout=10, follow_redirects=False) as browser:
        url = authorization_url
        for _ in range(12):
            response = browser.get(url)
            if response.is_redirect:
                url = urljoin(url, response.headers["location"])
                if url.startswith(stop_at):
                    return url
                continue
            found = _PROMPT.search(response.text)
            if response.status_code != 200 or found is None:
                raise AssertionError(f"unexpected IdP page {response.status_code}: {unescape(response.text)[:500]}")
            form = {"prompt": found.group(1), "login": login, "password": "any"}
            answer = browser.post(url, data=form)
            assert answer.is_redirect, answer.text[:500]
            url = urljoin(url, answer.headers["location"])
            if url.startswith(stop_at):
                return url
        raise AssertionError("the IdP never redirected back")
