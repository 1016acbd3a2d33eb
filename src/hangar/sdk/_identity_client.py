"""Calling AgentCore Identity's operations from inside an agent: botocore when the agent has it, else the stdlib.

With botocore installed the call goes through a real ``bedrock-agentcore`` client, so credentials, retries, TLS and
errors (``botocore.exceptions.ClientError`` subclasses) are exactly what the reference SDK gives. Without it, the
same JSON bodies are SigV4-signed here and sent with ``http.client``; a service error then raises
``IdentityServiceError`` (a subclass named after the AWS error code, with the same ``response`` shape as
``ClientError``). Endpoints, region and credentials are read at call time, never at import.
"""

from __future__ import annotations

import json
import os
import threading
from collections.abc import Mapping
from typing import Any

from ._identity_sigv4 import resolve_credentials, sign_headers

__all__ = ["IdentityServiceError", "call", "call_without_botocore", "endpoint_for", "region"]

SIGNING_NAME = "bedrock-agentcore"  # both planes sign with this name
DEFAULT_REGION = "us-west-2"
HTTP_TIMEOUT_SECONDS = 60.0  # botocore's default read timeout


# operation -> (plane, request path, botocore client method); plain tuples keep the SDK's import cheap.
_OPERATIONS: dict[str, tuple[str, str, str]] = {
    "GetResourceApiKey": ("data", "/identities/api-key", "get_resource_api_key"),
    "GetResourceOauth2Token": ("data", "/identities/oauth2/token", "get_resource_oauth2_token"),
    "GetWorkloadAccessTokenForUserId": (
        "data",
        "/identities/GetWorkloadAccessTokenForUserId",
        "get_workload_access_token_for_user_id",
    ),
    "GetWorkloadAccessTokenForJWT": (
        "data",
        "/identities/GetWorkloadAccessTokenForJWT",
        "get_workload_access_token_for_jwt",
    ),
    "CreateWorkloadIdentity": ("control", "/identities/CreateWorkloadIdentity", "create_workload_identity"),
}
_SERVICES = {"data": "bedrock-agentcore", "control": "bedrock-agentcore-control"}
# Hangar/AgentCore overrides first (what the reference SDK honours), then botocore's per-service variables.
_ENDPOINT_VARIABLES = {
    "data": ("BEDROCK_AGENTCORE_DP_ENDPOINT", "AWS_ENDPOINT_URL_BEDROCK_AGENTCORE", "AWS_ENDPOINT_URL"),
    "control": ("BEDROCK_AGENTCORE_CP_ENDPOINT", "AWS_ENDPOINT_URL_BEDROCK_AGENTCORE_CONTROL", "AWS_ENDPOINT_URL"),
}


class IdentityServiceError(Exception):
    """An error answer from the identity service (stdlib transport); ``response`` has ``ClientError``'s shape."""

    def __init__(self, operation_name: str, code: str, message: str, status: int) -> None:
        self.operation_name = operation_name
        self.code = code
        self.message = message
        self.response: dict[str, Any] = {
            "Error": {"Code": code, "Message": message},
            "ResponseMetadata": {"HTTPStatusCode": status},
        }
        super().__init__(f"An error occurred ({code}) when calling the {operation_name} operation: {message}")


_error_classes: dict[str, type[IdentityServiceError]] = {}
_error_lock = threading.Lock()


def _error_class(code: str) -> type[IdentityServiceError]:
    """One subclass per AWS error code, so ``except ResourceNotFoundException``-style handling reads the same."""
    if not code.isidentifier():
        return IdentityServiceError
    with _error_lock:
        if code not in _error_classes:
            _error_classes[code] = type(code, (IdentityServiceError,), {"__module__": __name__})
        return _error_classes[code]


def region(environ: Mapping[str, str] | None = None) -> str:
    """``AWS_REGION``, else ``AWS_DEFAULT_REGION``, else botocore's configured region (if installed), else us-west-2."""
    env = os.environ if environ is None else environ
    found = env.get("AWS_REGION") or env.get("AWS_DEFAULT_REGION")
    if found:
        return found
    try:
        import botocore.session
    except ImportError:
        return DEFAULT_REGION
    return botocore.session.get_session().get_config_variable("region") or DEFAULT_REGION


def endpoint_for(plane: str, region_name: str, environ: Mapping[str, str] | None = None) -> str:
    env = os.environ if environ is None else environ
    for variable in _ENDPOINT_VARIABLES[plane]:
        if env.get(variable):
            return env[variable].rstrip("/")
    return f"https://{_SERVICES[plane]}.{region_name}.amazonaws.com"


def _explicit_endpoint(plane: str) -> str | None:
    """Only the AgentCore override is passed to botocore; botocore resolves its own variables and defaults."""
    return os.environ.get(_ENDPOINT_VARIABLES[plane][0]) or None


# -- botocore path -------------------------------------------------------------------------------------------

_clients_lock = threading.Lock()
_clients: dict[tuple[int, str, str, str | None], Any] = {}  # (pid, service, region, endpoint) -> client


def _botocore_client(plane: str, region_name: str, method_name: str) -> Any | None:
    """A cached botocore client, or None when botocore is missing or too old to know the operation."""
    try:
        import botocore.session
    except ImportError:
        return None
    service, endpoint = _SERVICES[plane], _explicit_endpoint(plane)
    key = (os.getpid(), service, region_name, endpoint)  # a forked child builds its own (sockets, credentials)
    with _clients_lock:
        client = _clients.get(key)
        if client is None:
            session = botocore.session.get_session()
            if service not in session.get_available_services():
                return None
            client = session.create_client(service, region_name=region_name, endpoint_url=endpoint)
            _clients[key] = client
    return client if hasattr(client, method_name) else None


def call(operation: str, body: dict[str, Any]) -> dict[str, Any]:
    """Call ``operation`` with ``body`` (the botocore model's member names) and return the parsed answer."""
    plane, _path, method_name = _OPERATIONS[operation]
    region_name = region()
    client = _botocore_client(plane, region_name, method_name)
    if client is None:
        return call_without_botocore(operation, body, region_name)
    answer = dict(getattr(client, method_name)(**body))
    answer.pop("ResponseMetadata", None)
    return answer


# -- stdlib path ---------------------------------------------------------------------------------------------


def call_without_botocore(
    operation: str, body: dict[str, Any], region_name: str | None = None, environ: Mapping[str, str] | None = None
) -> dict[str, Any]:
    """The same call signed here and sent with ``http.client``; TLS verified against ``AWS_CA_BUNDLE`` if set."""
    from urllib.parse import urlsplit

    env = os.environ if environ is None else environ
    plane, operation_path, _method = _OPERATIONS[operation]
    region_name = region_name or region(env)
    base = urlsplit(endpoint_for(plane, region_name, env))
    if base.scheme not in ("http", "https") or not base.hostname:
        raise ValueError(f"unusable identity endpoint {base.geturl()!r}")
    path = base.path.rstrip("/") + operation_path
    payload = json.dumps(body, separators=(",", ":")).encode("utf-8")
    default_port = 443 if base.scheme == "https" else 80
    host = base.hostname if base.port in (None, default_port) else f"{base.hostname}:{base.port}"
    if ":" in base.hostname:  # IPv6 literal
        host = f"[{base.hostname}]" + ("" if base.port in (None, default_port) else f":{base.port}")
    headers = sign_headers(
        "POST",
        path,
        [],
        {"Host": host, "Content-Type": "application/json"},
        payload,
        resolve_credentials(env),
        region_name,
        SIGNING_NAME,
    )
    port = base.port or default_port
    status, reply_headers, reply = _send(
        base.scheme, base.hostname, port, path, headers, payload, env.get("AWS_CA_BUNDLE") or None
    )
    return _parse(operation, status, reply_headers, reply)


def _send(
    scheme: str, hostname: str, port: int, path: str, headers: dict[str, str], payload: bytes, ca_bundle: str | None
) -> tuple[int, dict[str, str], bytes]:
    import http.client

    if scheme == "https":
        import ssl

        context = ssl.create_default_context(cafile=ca_bundle)
        connection: http.client.HTTPConnection = http.client.HTTPSConnection(
            hostname, port, timeout=HTTP_TIMEOUT_SECONDS, context=context
        )
    else:
        connection = http.client.HTTPConnection(hostname, port, timeout=HTTP_TIMEOUT_SECONDS)
    try:
        connection.request("POST", path, body=payload, headers=headers)
        answer = connection.getresponse()
        return answer.status, {name.lower(): value for name, value in answer.getheaders()}, answer.read()
    finally:
        connection.close()


def _parse(operation: str, status: int, headers: dict[str, str], reply: bytes) -> dict[str, Any]:
    try:
        document = json.loads(reply) if reply.strip() else {}
    except ValueError:
        document = None
    if 200 <= status < 300:
        if not isinstance(document, dict):
            raise IdentityServiceError(operation, "InvalidResponse", "the answer is not a JSON object", status)
        return document
    fields = document if isinstance(document, dict) else {}
    # rest-json: the code travels in x-amzn-errortype ("Code:uri") or the body's __type ("namespace#Code").
    code = headers.get("x-amzn-errortype", "").split(":")[0] or str(fields.get("__type", "")).rpartition("#")[2]
    code = code or ("InternalServerException" if status >= 500 else f"HTTP{status}")
    message = str(fields.get("message") or fields.get("Message") or reply[:200].decode("utf-8", "replace"))
    raise _error_class(code)(operation, code, message, status)
