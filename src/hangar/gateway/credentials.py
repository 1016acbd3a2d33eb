"""Operator API for access keys (``hangar credentials``), SigV4-signed like every other call.

POST   /hangar/credentials/                  {"name": "ci"} -> 201 the new key, secret included (shown once)
GET    /hangar/credentials/                  -> 200 {"credentials": [...]} (never a secret)
DELETE /hangar/credentials/{accessKeyId}/    -> 200 {"accessKeyId": ...}; 409 for the last remaining key
"""

from __future__ import annotations

import json

import anyio.to_thread
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from hangar.auth.credentials import AccessKey, CredentialStore
from hangar.domain.errors import ValidationError
from hangar.gateway.routing import Route


def _store(request: Request) -> CredentialStore:
    store: CredentialStore = request.app.state.services.credentials
    return store


def _describe(key: AccessKey) -> dict[str, object]:
    return {
        "accessKeyId": key.access_key_id,
        "accountId": key.account_id,
        "name": key.principal_name,
        "createdAt": key.created_at.isoformat(),
        "lastUsedAt": key.last_used_at.isoformat() if key.last_used_at else None,
    }


async def create_credential(request: Request, _params: dict[str, str]) -> Response:
    body = await request.body()
    try:
        document = json.loads(body or b"{}")
    except (ValueError, RecursionError):  # RecursionError: nesting deeper than the parser's stack
        raise ValidationError("The request body is not valid JSON", reason="CannotParse") from None
    name = document.get("name") if isinstance(document, dict) else None
    if not isinstance(name, str):
        raise ValidationError("'name' (a string) is required")
    key, secret = await anyio.to_thread.run_sync(_store(request).create, name)
    return JSONResponse({**_describe(key), "secretAccessKey": secret}, status_code=201)


async def list_credentials(request: Request, _params: dict[str, str]) -> Response:
    keys = await anyio.to_thread.run_sync(_store(request).list_keys)
    return JSONResponse({"credentials": [_describe(key) for key in keys]})


async def delete_credential(request: Request, params: dict[str, str]) -> Response:
    key_id = params["accessKeyId"]
    await anyio.to_thread.run_sync(_store(request).delete, key_id)
    return JSONResponse({"accessKeyId": key_id})


ROUTES = [
    Route("POST", "/hangar/credentials/", create_credential, name="CreateCredential"),
    Route("GET", "/hangar/credentials/", list_credentials, name="ListCredentials"),
    Route("DELETE", "/hangar/credentials/{accessKeyId}/", delete_credential, name="DeleteCredential"),
]
