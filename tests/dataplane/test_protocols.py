"""WebSocket relay, commands as an event stream, agent cards, header forwarding, the aws CLI and the real SDK."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlencode

import pytest
import websockets
from botocore.auth import SigV4Auth, SigV4QueryAuth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials
from botocore.exceptions import ClientError
from websockets.exceptions import ConnectionClosed

from tests.dataplane.support import deploy, new_session_id, session_state
from tests.support.server import HangarServer, read_admin_key

AWS = Path(sys.executable).parent / "aws"
SESSION_HEADER = "X-Amzn-Bedrock-AgentCore-Runtime-Session-Id"


@pytest.fixture(scope="module")
def rawecho(control: Any) -> dict[str, Any]:
    return deploy(
        control,
        "rawecho",
        requestHeaderConfiguration={"requestHeaderAllowlist": ["X-Team"]},
    )


def _ws_url(server: HangarServer, arn: str) -> str:
    return f"ws://127.0.0.1:{server.port}/runtimes/{quote(arn, safe='')}/ws"


def _signed_ws_headers(server: HangarServer, url: str, session_id: str) -> dict[str, str]:
    key_id, secret = read_admin_key(server.credentials_file)
    request = AWSRequest(method="GET", url=url.replace("ws://", "http://"), headers={SESSION_HEADER: session_id})
    SigV4Auth(Credentials(key_id, secret), "bedrock-agentcore", "us-west-2").add_auth(request)
    return {k: v for k, v in request.headers.items() if k.lower() != "host"}


def test_websocket_relays_text_binary_and_close_codes(server: HangarServer, control: Any) -> None:
    runtime = deploy(control, "rawecho", description="ws")
    url = _ws_url(server, runtime["agentRuntimeArn"])
    session_id = new_session_id()

    async def talk() -> tuple[str, bytes, int, str]:
        headers = _signed_ws_headers(server, url, session_id)
        async with websockets.connect(url, additional_headers=headers) as ws:
            await ws.send("hello")
            text = await ws.recv()
            await ws.send(b"\x00\x01binary")
            data = await ws.recv()
            await ws.ping()
            await ws.send("close:4001")
            with pytest.raises(ConnectionClosed):
                await ws.recv()
            return str(text), bytes(data), ws.close_code or 0, ws.close_reason or ""

    text, data, code, reason = asyncio.run(talk())
    assert (text, data, code, reason) == ("hello", b"\x00\x01binary", 4001, "asked to")
    assert session_state(server, runtime["agentRuntimeId"], session_id) == "Idle"


def test_websocket_with_a_presigned_url(server: HangarServer, rawecho: dict[str, Any]) -> None:
    runtime = rawecho
    session_id = new_session_id()
    base = _ws_url(server, runtime["agentRuntimeArn"])
    key_id, secret = read_admin_key(server.credentials_file)
    request = AWSRequest(
        method="GET", url=f"{base.replace('ws://', 'http://')}?{urlencode({SESSION_HEADER: session_id})}"
    )
    SigV4QueryAuth(Credentials(key_id, secret), "bedrock-agentcore", "us-west-2", expires=300).add_auth(request)
    presigned = request.url.replace("http://", "ws://")

    async def talk() -> list[str]:
        async with websockets.connect(presigned) as ws:
            await ws.send("one")
            first = await ws.recv()
            await ws.close(code=4002)
            return [str(first), str(ws.close_code)]

    assert asyncio.run(talk()) == ["one", "4002"]
    assert session_state(server, runtime["agentRuntimeId"], session_id) == "Idle"


def test_websocket_to_the_sdk_echo_example(server: HangarServer, control: Any) -> None:
    runtime = deploy(control, "websocket_echo")
    url = _ws_url(server, runtime["agentRuntimeArn"])
    session_id = new_session_id()

    async def talk() -> tuple[str, int | None]:
        async with websockets.connect(url, additional_headers=_signed_ws_headers(server, url, session_id)) as ws:
            await ws.send("one")
            first = await ws.recv()
            await ws.send("close")
            with pytest.raises(ConnectionClosed):
                await ws.recv()
            return str(first), ws.close_code

    assert asyncio.run(talk()) == ("one", 1000)


def test_websocket_without_credentials_is_refused(server: HangarServer, rawecho: dict[str, Any]) -> None:
    async def talk() -> int:
        with pytest.raises(websockets.InvalidStatus) as raised:
            async with websockets.connect(_ws_url(server, rawecho["agentRuntimeArn"])):
                pass
        return raised.value.response.status_code

    assert asyncio.run(talk()) == 403


def test_command_streams_stdout_stderr_and_exit_code(data: Any, rawecho: dict[str, Any]) -> None:
    response = data.invoke_agent_runtime_command(
        agentRuntimeArn=rawecho["agentRuntimeArn"],
        runtimeSessionId=new_session_id(),
        body={"command": "echo out; echo err >&2; printf 'h\\303\\251'; exit 3", "timeout": 30},
    )
    assert response["contentType"] == "application/vnd.amazon.eventstream"
    chunks = [event["chunk"] for event in response["stream"]]
    assert chunks[0] == {"contentStart": {}}
    stdout = "".join(c["contentDelta"].get("stdout", "") for c in chunks if "contentDelta" in c)
    stderr = "".join(c["contentDelta"].get("stderr", "") for c in chunks if "contentDelta" in c)
    assert stdout == "out\nhé" and stderr == "err\n"
    assert chunks[-1] == {"contentStop": {"exitCode": 3, "status": "COMPLETED"}}


def test_command_timeout_is_reported_as_timed_out(data: Any, rawecho: dict[str, Any]) -> None:
    response = data.invoke_agent_runtime_command(
        agentRuntimeArn=rawecho["agentRuntimeArn"],
        runtimeSessionId=new_session_id(),
        body={"command": "echo started; sleep 30", "timeout": 1},
    )
    chunks = [event["chunk"] for event in response["stream"]]
    assert {"contentDelta": {"stdout": "started\n"}} in chunks
    assert chunks[-1]["contentStop"]["status"] == "TIMED_OUT"


def test_command_runs_in_the_sessions_sandbox(data: Any, control: Any) -> None:
    testbed = deploy(control, "testbed", description="exec")
    session_id = new_session_id()
    data.invoke_agent_runtime(
        agentRuntimeArn=testbed["agentRuntimeArn"],
        runtimeSessionId=session_id,
        payload=json.dumps({"action": "write", "name": "from-agent.txt", "text": "shared"}),
    )["response"].read()
    response = data.invoke_agent_runtime_command(
        agentRuntimeArn=testbed["agentRuntimeArn"],
        runtimeSessionId=session_id,
        body={"command": 'cat "$HOME/from-agent.txt"'},
    )
    out = "".join(e["chunk"].get("contentDelta", {}).get("stdout", "") for e in response["stream"])
    assert out == "shared"


def test_only_allowlisted_and_contract_headers_reach_the_agent(data: Any, rawecho: dict[str, Any]) -> None:
    sent = {
        "X-Team": "blue",
        "X-Not-Allowed": "no",
        "X-Amzn-Bedrock-AgentCore-Runtime-Custom-Thing": "yes",
    }

    def add_headers(request: AWSRequest, **_: Any) -> None:
        for name, value in sent.items():
            request.headers[name] = value

    data.meta.events.register_first("before-sign.bedrock-agentcore.InvokeAgentRuntime", add_headers)
    try:
        response = data.invoke_agent_runtime(
            agentRuntimeArn=rawecho["agentRuntimeArn"],
            runtimeSessionId=new_session_id(),
            payload=b"{}",
            contentType="application/x-headers",
            traceParent="00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
        )
    finally:
        data.meta.events.unregister("before-sign.bedrock-agentcore.InvokeAgentRuntime", add_headers)
    seen = json.loads(response["response"].read())
    names = set(seen)
    assert seen["traceparent"] == "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
    assert response["traceParent"] == seen["traceparent"]
    assert {"x-team", "x-amzn-bedrock-agentcore-runtime-custom-thing"} <= names
    assert "x-amzn-bedrock-agentcore-runtime-session-id" in names
    assert "x-amzn-bedrock-agentcore-runtime-request-id" in names
    # SigV4 material never reaches the agent
    assert not names & {"x-not-allowed", "authorization", "x-amz-date", "x-amz-security-token"}


def test_mcp_runtime_gets_mcp_headers_and_a_session_id_it_did_not_send(data: Any, control: Any) -> None:
    mcp = deploy(control, "rawecho", protocolConfiguration={"serverProtocol": "MCP"})
    session_id = new_session_id()
    response = data.invoke_agent_runtime(
        agentRuntimeArn=mcp["agentRuntimeArn"],
        runtimeSessionId=session_id,
        payload=b"{}",
        contentType="application/x-headers",
        mcpProtocolVersion="2025-06-18",
    )
    seen = json.loads(response["response"].read())
    assert seen["mcp-session-id"] == session_id and seen["mcp-protocol-version"] == "2025-06-18"
    assert response["mcpSessionId"] == session_id
    explicit = data.invoke_agent_runtime(
        agentRuntimeArn=mcp["agentRuntimeArn"],
        runtimeSessionId=session_id,
        payload=b"{}",
        contentType="application/x-headers",
        mcpSessionId="client-chosen",
    )
    assert json.loads(explicit["response"].read())["mcp-session-id"] == "client-chosen"


def test_agent_card_of_an_a2a_runtime(data: Any, control: Any, rawecho: dict[str, Any]) -> None:
    a2a = deploy(control, "rawecho", protocolConfiguration={"serverProtocol": "A2A"})
    card = data.get_agent_card(agentRuntimeArn=a2a["agentRuntimeArn"], runtimeSessionId=new_session_id())
    assert card["agentCard"]["name"] == "rawecho" and card["statusCode"] == 200
    with pytest.raises(ClientError) as raised:
        data.get_agent_card(agentRuntimeArn=rawecho["agentRuntimeArn"])
    assert raised.value.response["Error"]["Code"] == "ValidationException"


def test_aws_cli_writes_the_answer_to_its_outfile(server: HangarServer, control: Any, tmp_path: Path) -> None:
    echo = deploy(control, "echo", description="cli")
    key_id, secret = read_admin_key(server.credentials_file)
    outfile = tmp_path / "out.json"
    env = {
        **os.environ,
        "AWS_ACCESS_KEY_ID": key_id,
        "AWS_SECRET_ACCESS_KEY": secret,
        "AWS_DEFAULT_REGION": "us-west-2",
        "AWS_EC2_METADATA_DISABLED": "true",
    }
    session_id = new_session_id()
    done = subprocess.run(
        [
            str(AWS), "bedrock-agentcore", "invoke-agent-runtime", "--endpoint-url", server.url,
            "--agent-runtime-arn", echo["agentRuntimeArn"], "--runtime-session-id", session_id,
            "--payload", '{"prompt": "from the cli"}', str(outfile),
        ],
        env=env, capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    summary = json.loads(done.stdout)
    assert summary["runtimeSessionId"] == session_id and summary["statusCode"] == 200
    assert json.loads(outfile.read_text()) == {"echo": {"prompt": "from the cli"}, "session_id": session_id}


def test_agent_on_the_real_bedrock_agentcore_sdk_runs_unchanged(server: HangarServer, data: Any, control: Any) -> None:
    real = deploy(control, "realsdk")
    session_id = new_session_id()
    for turn, prompt in enumerate(("first", "second"), start=1):
        response = data.invoke_agent_runtime(
            agentRuntimeArn=real["agentRuntimeArn"], runtimeSessionId=session_id, payload=json.dumps({"prompt": prompt})
        )
        body = json.loads(response["response"].read())
        assert body["sdk"] == "bedrock-agentcore" and body["session"] == session_id and len(body["turns"]) == turn
    streamed = data.invoke_agent_runtime(
        agentRuntimeArn=real["agentRuntimeArn"],
        runtimeSessionId=session_id,
        payload=json.dumps({"prompt": "a b c", "stream": True}),
    )
    lines = [json.loads(x.removeprefix(b"data: ")) for x in streamed["response"].iter_lines() if x]
    assert lines == [{"word": "a"}, {"word": "b"}, {"word": "c"}]
