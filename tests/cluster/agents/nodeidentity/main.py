"""Test agent of the node identity tests (hangar.sdk + plain boto3): what an agent on a ``hangar node`` gets.

boto3 finds everything in the sandbox's environment, as on AWS: its credentials (the container provider, from the
node's ``credentials.sock``) and the identity endpoint (``AWS_ENDPOINT_URL_BEDROCK_AGENTCORE``, the node's
``identity.sock``, trusted through ``AWS_CA_BUNDLE``).
"""

from __future__ import annotations

import os
from typing import Any

import boto3
from botocore.exceptions import ClientError

from hangar.sdk import BedrockAgentCoreApp, RequestContext

app = BedrockAgentCoreApp()


def _client() -> Any:
    return boto3.client("bedrock-agentcore", region_name=os.environ["AWS_REGION"])


def _error(exc: ClientError) -> dict[str, Any]:
    error = exc.response["Error"]
    return {
        "error": error["Code"],
        "status": exc.response["ResponseMetadata"]["HTTPStatusCode"],
        "message": error.get("Message", ""),
    }


def _wat(context: RequestContext) -> str:
    headers = {name.lower(): value for name, value in (context.request_headers or {}).items()}
    return headers["workloadaccesstoken"]


@app.entrypoint
def invoke(payload: dict[str, Any], context: RequestContext) -> dict[str, Any]:
    action = payload.get("action")
    try:
        if action == "credentials":
            frozen = boto3.Session().get_credentials().get_frozen_credentials()
            return {"accessKeyId": frozen.access_key, "hasToken": bool(frozen.token)}
        if action == "api_key":  # with the token the gateway minted for this invocation, or one given
            answer = _client().get_resource_api_key(
                workloadIdentityToken=payload.get("wat") or _wat(context),
                resourceCredentialProviderName=payload["provider"],
            )
            return {"apiKey": answer["apiKey"]}
        if action == "wat_for_jwt":
            answer = _client().get_workload_access_token_for_jwt(
                workloadName=payload["workload"], userToken=payload["token"]
            )
            return {"wat": answer["workloadAccessToken"]}
        if action == "invoke":
            _client().invoke_agent_runtime(agentRuntimeArn=payload["arn"], payload=b"{}")
            return {"error": None}
    except ClientError as exc:
        return _error(exc)
    return {"unknown": action}


if __name__ == "__main__":
    app.run()
