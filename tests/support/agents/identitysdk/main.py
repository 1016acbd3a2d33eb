"""Test agent written against the real ``bedrock-agentcore`` SDK, using AgentCore Identity exactly as on AWS.

The decorators build the SDK's ``IdentityClient`` (two boto3 clients) while this module imports, so credentials
are fetched at import time. The provider names come from the runtime's environment variables.
"""

from __future__ import annotations

import os
from typing import Any

import boto3
from bedrock_agentcore import BedrockAgentCoreApp, RequestContext
from bedrock_agentcore.identity.auth import requires_access_token, requires_api_key
from bedrock_agentcore.runtime.context import BedrockAgentCoreContext
from bedrock_agentcore.services.identity import IdentityClient
from botocore.exceptions import ClientError

app = BedrockAgentCoreApp()
REGION = os.environ["AWS_REGION"]


@requires_api_key(provider_name=os.environ.get("API_KEY_PROVIDER", "none"))
async def api_key(*, api_key: str) -> str:
    return api_key


@requires_access_token(
    provider_name=os.environ.get("OAUTH2_PROVIDER", "none"), scopes=["reports:read"], auth_flow="M2M", into="token"
)
async def m2m_token(*, token: str) -> str:
    return token


def _error(exc: ClientError) -> dict[str, Any]:
    return {"error": exc.response["Error"]["Code"], "message": exc.response["Error"].get("Message", "")}


def _client(credentials: dict[str, str] | None = None) -> Any:
    kwargs: dict[str, Any] = {"region_name": REGION, "endpoint_url": os.environ["BEDROCK_AGENTCORE_DP_ENDPOINT"]}
    if credentials:
        kwargs.update(
            aws_access_key_id=credentials["AccessKeyId"],
            aws_secret_access_key=credentials["SecretAccessKey"],
            aws_session_token=credentials["Token"],
        )
    return boto3.client("bedrock-agentcore", **kwargs)


async def handle(payload: dict[str, Any], context: RequestContext) -> dict[str, Any]:
    action = payload.get("action")
    if action == "api_key":
        return {"api_key": await api_key()}
    if action == "m2m":
        return {"token": await m2m_token()}
    if action == "wat":
        headers = context.request_headers or {}
        return {"wat": BedrockAgentCoreContext.get_workload_access_token(), "headers": sorted(headers)}
    if action == "credentials":
        frozen = boto3.Session().get_credentials().get_frozen_credentials()
        return {"AccessKeyId": frozen.access_key, "SecretAccessKey": frozen.secret_key, "Token": frozen.token}
    if action == "api_key_with":  # a hostile session: someone else's WAT and/or credentials
        try:
            answer = _client(payload.get("credentials")).get_resource_api_key(
                workloadIdentityToken=payload["wat"], resourceCredentialProviderName=payload["provider"]
            )
        except ClientError as exc:
            return _error(exc)
        return {"api_key": answer["apiKey"]}
    if action == "wat_for":  # a hostile session: a workload access token for another workload
        try:
            answer = IdentityClient(REGION).dp_client.get_workload_access_token(workloadName=payload["workload"])
        except ClientError as exc:
            return _error(exc)
        return {"wat": answer["workloadAccessToken"]}
    if action == "not_identity":  # the identity endpoint serves identity operations only
        try:
            _client().invoke_agent_runtime(agentRuntimeArn=payload["arn"], payload=b"{}")
        except ClientError as exc:
            return _error(exc)
        return {"error": None}
    return {"unknown": action}


@app.entrypoint
async def invoke(payload: dict[str, Any], context: RequestContext) -> dict[str, Any]:
    return await handle(payload, context)


@app.websocket
async def websocket(ws: Any, context: RequestContext) -> None:
    """One message in; the workload access token this connection carries and the API key fetched with it out."""
    await ws.accept()
    await ws.receive_text()
    await ws.send_json({"wat": BedrockAgentCoreContext.get_workload_access_token(), "api_key": await api_key()})
    await ws.close()


if __name__ == "__main__":
    app.run()
