"""Test agent that calls other runtimes from inside its session, configured by nothing but its environment:
boto3's ``invoke_agent_runtime`` and the a2a-sdk client (signing httpx with the session's own credentials)."""

from __future__ import annotations

import asyncio
import json
import os
import uuid
from collections.abc import AsyncIterator
from typing import Any
from urllib.parse import quote

import boto3
import httpx
from a2a.client import A2ACardResolver, ClientConfig, ClientFactory
from a2a.types import Message, Part, Role, SendMessageRequest
from bedrock_agentcore import BedrockAgentCoreApp, RequestContext
from bedrock_agentcore.runtime.context import BedrockAgentCoreContext
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.exceptions import ClientError

app = BedrockAgentCoreApp()
ENDPOINT = os.environ["AWS_ENDPOINT_URL_BEDROCK_AGENTCORE"]
SESSION = "X-Amzn-Bedrock-AgentCore-Runtime-Session-Id"


class SigV4(httpx.Auth):
    """The session's own credentials (container provider), signing as boto3 would."""

    requires_request_body = True

    def auth_flow(self, request: httpx.Request) -> Any:
        credentials = boto3.Session().get_credentials().get_frozen_credentials()
        signed = AWSRequest(method=request.method, url=str(request.url), data=request.content)
        for name in ("content-type", SESSION.lower()):
            if name in request.headers:
                signed.headers[name] = request.headers[name]
        SigV4Auth(credentials, "bedrock-agentcore", os.environ["AWS_REGION"]).add_auth(signed)
        for name in ("Authorization", "X-Amz-Date", "X-Amz-Security-Token"):
            request.headers[name] = signed.headers[name]
        yield request


def _error(exc: ClientError) -> dict[str, Any]:
    return {"error": exc.response["Error"]["Code"], "message": exc.response["Error"].get("Message", "")}


async def _a2a(arn: str, text: str) -> dict[str, Any]:
    url = f"{ENDPOINT}/runtimes/{quote(arn, safe='')}/invocations"
    headers = {SESSION: f"a2a-caller-{uuid.uuid4()}"}
    verify = os.environ["AWS_CA_BUNDLE"]
    async with httpx.AsyncClient(auth=SigV4(), headers=headers, verify=verify, timeout=120) as http:
        card = await A2ACardResolver(http, base_url=url).get_agent_card()
        client = ClientFactory(ClientConfig(httpx_client=http, streaming=False)).create(card)
        message = Message(role=Role.ROLE_USER, parts=[Part(text=text)], message_id=str(uuid.uuid4()))
        events = [event async for event in client.send_message(SendMessageRequest(message=message))]
        await client.close()
    texts = [part.text for event in events if event.HasField("message") for part in event.message.parts]
    return {"card": card.name, "texts": texts}


RELEASED = asyncio.Event()


async def _gated() -> AsyncIterator[dict[str, str]]:
    """Streams "first", then waits for a "release" call to this session before "second": only a caller that got
    "first" while the answer was still open can release it (a buffering hop in between would wait forever)."""
    yield {"part": "first"}
    await RELEASED.wait()
    yield {"part": "second"}


def _relay(payload: dict[str, Any]) -> dict[str, Any]:
    client = boto3.client("bedrock-agentcore")
    gated = client.invoke_agent_runtime(
        agentRuntimeArn=payload["arn"], runtimeSessionId=payload["session"], payload=json.dumps({"op": "gated"})
    )
    lines: list[str] = []
    for raw in gated["response"].iter_lines(chunk_size=1):  # urllib3 read(n) waits for n bytes
        line = raw.decode()
        if not line.startswith("data:"):
            continue
        lines.append(line)
        if len(lines) == 1:  # the first event is here while the answer is still open: release the rest
            client.invoke_agent_runtime(
                agentRuntimeArn=payload["arn"],
                runtimeSessionId=payload["session"],
                payload=json.dumps({"op": "release"}),
            )
    return {"lines": lines, "content_type": gated["contentType"]}


@app.entrypoint
async def handle(payload: dict[str, Any], context: RequestContext) -> Any:
    op = payload["op"]
    if op == "gated":
        return _gated()
    if op == "release":
        RELEASED.set()
        return {"released": True}
    if op == "relay":
        return await asyncio.to_thread(_relay, payload)
    if op == "whoami":
        return {"session": context.session_id}
    if op == "credentials":  # hostile tests hand these to another session
        frozen = boto3.Session().get_credentials().get_frozen_credentials()
        return {"key": frozen.access_key, "secret": frozen.secret_key, "token": frozen.token}
    if op == "invoke":
        stolen = payload.get("credentials")  # hostile: another session's keys
        keys = (
            {
                "aws_access_key_id": stolen["key"],
                "aws_secret_access_key": stolen["secret"],
                "aws_session_token": stolen["token"],
            }
            if stolen
            else {}
        )
        client = boto3.client("bedrock-agentcore", **keys)  # endpoint, region, credentials: from the environment
        extra = {"runtimeSessionId": payload["session"]} if payload.get("session") else {}
        for name, value in payload.get("headers", {}).items():  # e.g. A2A-Version, which boto3 has no parameter for
            client.meta.events.register(
                "before-sign.bedrock-agentcore.InvokeAgentRuntime",
                lambda request, name=name, value=value, **_: request.headers.__setitem__(name, value),
            )
        try:
            answer = client.invoke_agent_runtime(
                agentRuntimeArn=payload["arn"], payload=json.dumps(payload.get("payload", {})), **extra
            )
        except ClientError as exc:
            return _error(exc)
        return {"answer": json.loads(answer["response"].read())}
    if op == "a2a":
        try:
            return await _a2a(payload["arn"], payload.get("text", "hello"))
        except Exception as exc:  # the a2a client's error for a refused card: its message names the status
            return {"error": type(exc).__name__, "message": str(exc)}
    if op == "bearer":  # an M2M token for the target's authorizer, then the target called with it
        client = boto3.client("bedrock-agentcore")
        try:
            token = client.get_resource_oauth2_token(
                workloadIdentityToken=BedrockAgentCoreContext.get_workload_access_token(),
                resourceCredentialProviderName=payload["provider"],
                scopes=payload["scopes"],
                oauth2Flow="M2M",
            )["accessToken"]
        except ClientError as exc:
            return _error(exc)
        url = f"{ENDPOINT}/runtimes/{quote(payload['arn'], safe='')}/invocations"
        headers = {"Authorization": f"Bearer {token}", SESSION: f"bearer-caller-{uuid.uuid4()}", "A2A-Version": "1.0"}
        async with httpx.AsyncClient(headers=headers, verify=os.environ["AWS_CA_BUNDLE"], timeout=120) as http:
            card = await http.get(f"{url}/.well-known/agent-card.json")
            sent = await http.post(url, json=payload["rpc"])
        return {"card": card.status_code, "status": sent.status_code, "body": sent.text[:2000]}
    if op == "raw":  # hostile: whatever headers and credentials the test says
        verify = os.environ["AWS_CA_BUNDLE"]
        response = httpx.request(
            payload.get("method", "POST"),
            f"{ENDPOINT}{payload['path']}",
            headers=payload.get("headers", {}),
            content=payload.get("body", "").encode(),
            verify=verify,
        )
        return {
            "status": response.status_code,
            "body": response.text[:2000],
            "type": response.headers.get("x-amzn-ErrorType"),
        }
    raise ValueError(f"unknown op {op}")


if __name__ == "__main__":
    app.run()
