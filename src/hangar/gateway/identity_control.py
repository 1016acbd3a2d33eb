"""Identity control-plane routes of ``bedrock-agentcore-control`` (``POST /identities/<Op>``, input in the body),
plus the operator's vault routes under ``/hangar/identity/``. All SigV4 (admin keys).

The data-plane identity routes (workload access tokens, resource tokens, the OAuth2 callback) live in
``identity_data.py``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from starlette.requests import Request
from starlette.responses import Response

from hangar.gateway.control.wire import empty, json_body, render
from hangar.gateway.routing import Route
from hangar.identity import commands as c
from hangar.identity.setup import Identity


def _identity(request: Request) -> Identity:
    identity: Identity = request.app.state.services.identity
    return identity


def _operation(parse: Callable[[dict[str, Any]], Any], status: int) -> Callable[[Request, dict[str, str]], Any]:
    async def handler(request: Request, _params: dict[str, str]) -> Response:
        command = parse(await json_body(request, allow_empty=True))
        document = await _identity(request).control.execute(command)
        return empty(status) if status == 204 else render(document, status)

    return handler


_OPERATIONS: list[tuple[str, str, Callable[[dict[str, Any]], Any], int]] = [
    ("CreateWorkloadIdentity", "CreateWorkloadIdentity", c.parse_create_workload, 201),
    ("GetWorkloadIdentity", "GetWorkloadIdentity", c.parse_get_workload, 200),
    ("UpdateWorkloadIdentity", "UpdateWorkloadIdentity", c.parse_update_workload, 200),
    ("DeleteWorkloadIdentity", "DeleteWorkloadIdentity", c.parse_delete_workload, 204),
    ("ListWorkloadIdentities", "ListWorkloadIdentities", c.parse_list_workloads, 200),
    ("CreateApiKeyCredentialProvider", "CreateApiKeyCredentialProvider", c.parse_create_api_key, 201),
    ("GetApiKeyCredentialProvider", "GetApiKeyCredentialProvider", c.parse_get_api_key, 200),
    ("UpdateApiKeyCredentialProvider", "UpdateApiKeyCredentialProvider", c.parse_update_api_key, 200),
    ("DeleteApiKeyCredentialProvider", "DeleteApiKeyCredentialProvider", c.parse_delete_api_key, 204),
    ("ListApiKeyCredentialProviders", "ListApiKeyCredentialProviders", c.parse_list_api_keys, 200),
    ("CreateOauth2CredentialProvider", "CreateOauth2CredentialProvider", c.parse_create_oauth2, 201),
    ("GetOauth2CredentialProvider", "GetOauth2CredentialProvider", c.parse_get_oauth2, 200),
    ("UpdateOauth2CredentialProvider", "UpdateOauth2CredentialProvider", c.parse_update_oauth2, 200),
    ("DeleteOauth2CredentialProvider", "DeleteOauth2CredentialProvider", c.parse_delete_oauth2, 204),
    ("ListOauth2CredentialProviders", "ListOauth2CredentialProviders", c.parse_list_oauth2, 200),
    ("get-token-vault", "GetTokenVault", c.parse_get_token_vault, 200),
    ("reset-token-vault-key-material", "ResetTokenVaultKeyMaterial", c.parse_reset_token_vault_key, 200),
]


async def rotate_vault_key(request: Request, _params: dict[str, str]) -> Response:
    """Operator action: a new current key, every secret re-sealed under it, the old keys retired."""
    import asyncio

    identity = _identity(request)
    report = await asyncio.to_thread(identity.rotation.rotate)
    return render(
        {
            "currentKeyId": report.current_key_id,
            "rewritten": report.rewritten,
            "retiredKeyIds": list(report.retired_key_ids),
            "unreadable": report.unreadable,
        }
    )


async def vault_status(request: Request, _params: dict[str, str]) -> Response:
    """The vault's keys (ids and ages, never material) and how many stored secrets each seals."""
    import asyncio

    identity = _identity(request)
    ring = identity.box.ring
    counts = await asyncio.to_thread(identity.rotation.counts)
    ring.refresh()
    keys = [
        {
            "keyId": key.key_id,
            "createdAt": key.created_at,
            "current": key.key_id == ring.current,
            "secrets": counts.get(key.key_id, 0),
        }
        for key in ring.keys.values()
    ]
    return render({"currentKeyId": ring.current, "keys": keys, "keyFile": str(ring.path)})


ROUTES = [
    *(
        Route("POST", f"/identities/{path}", _operation(parse, status), name=name)
        for path, name, parse, status in _OPERATIONS
    ),
    Route("POST", "/hangar/identity/rotate-vault-key", rotate_vault_key, name="RotateVaultKey"),
    Route("GET", "/hangar/identity/vault", vault_status, name="GetVaultStatus"),
]
