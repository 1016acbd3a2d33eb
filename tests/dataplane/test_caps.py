"""Caps on live sessions through the wire: 402 ServiceQuotaExceededException, and a stopped session frees a slot."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest
from botocore.exceptions import ClientError

from tests.dataplane.support import deploy, new_session_id, seeded_server
from tests.support.server import HangarServer


@pytest.fixture(scope="module")
def capped() -> Iterator[HangarServer]:
    env = {"HANGAR_MAX_SESSIONS": "2", "HANGAR_MAX_SESSIONS_PER_RUNTIME": "1"}
    with seeded_server("hangar-caps-", ["echo"], env=env) as server:
        yield server


def test_session_caps_answer_402_until_a_session_ends(capped: HangarServer) -> None:
    control, data = capped.boto3_client("bedrock-agentcore-control"), capped.boto3_client("bedrock-agentcore")
    first, second = deploy(control, "echo"), deploy(control, "echo", description="second runtime")

    def invoke(runtime: dict[str, Any], session_id: str) -> dict[str, Any]:
        response = data.invoke_agent_runtime(
            agentRuntimeArn=runtime["agentRuntimeArn"], runtimeSessionId=session_id, payload=b"{}"
        )
        return json.loads(response["response"].read())

    held = new_session_id()
    invoke(first, held)
    with pytest.raises(ClientError) as raised:
        invoke(first, new_session_id())
    error = raised.value.response
    assert error["Error"]["Code"] == "ServiceQuotaExceededException"
    assert error["ResponseMetadata"]["HTTPStatusCode"] == 402
    assert "max_sessions_per_runtime" in error["Error"]["Message"]
    assert invoke(first, held)["session_id"] == held  # a live session is never refused
    invoke(second, new_session_id())
    third = deploy(control, "echo", description="third runtime")
    with pytest.raises(ClientError) as raised:
        invoke(third, new_session_id())
    assert "max_sessions=" in raised.value.response["Error"]["Message"]
    data.stop_runtime_session(agentRuntimeArn=first["agentRuntimeArn"], runtimeSessionId=held)
    assert invoke(third, new_session_id())["echo"] == {}
