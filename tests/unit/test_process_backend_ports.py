"""The process backend and the contract port, with unmodified agents on a real ``hangar serve --sandbox process``.

The real ``bedrock-agentcore`` SDK binds 0.0.0.0:8080 whatever ``PORT`` says. On the process backend (one host
network) the first session gets the contract port and answers; a second concurrent one is refused with a clear
ServiceQuotaExceededException (never a cryptic 424 or a minute of silence); once the first stops, the port is free
again. An agent that honours ``PORT`` (``hangar.sdk``) runs any number of sessions side by side.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest
from botocore.exceptions import ClientError

from tests.dataplane.support import deploy, new_session_id, seeded_server
from tests.support.server import HangarServer


@pytest.fixture(scope="module")
def server() -> Iterator[HangarServer]:
    with seeded_server("hangar-process-ports-", ["realsdk", "testbed"], extra_args=["--sandbox", "process"]) as hangar:
        yield hangar


@pytest.fixture(scope="module")
def clients(server: HangarServer) -> tuple[Any, Any]:
    return server.boto3_client("bedrock-agentcore-control"), server.boto3_client("bedrock-agentcore")


def invoke(data: Any, arn: str, session: str, prompt: str) -> dict[str, Any]:
    answer = data.invoke_agent_runtime(
        agentRuntimeArn=arn, runtimeSessionId=session, payload=json.dumps({"prompt": prompt}).encode()
    )
    return dict(json.loads(answer["response"].read()))


def test_real_sdk_agent_one_session_per_contract_port_with_a_clear_refusal(clients: tuple[Any, Any]) -> None:
    control, data = clients
    arn = deploy(control, "realsdk")["agentRuntimeArn"]
    first, second = new_session_id(), new_session_id()
    assert invoke(data, arn, first, "hello")["sdk"] == "bedrock-agentcore"

    with pytest.raises(ClientError) as refused:
        invoke(data, arn, second, "too")
    error = refused.value.response["Error"]
    assert refused.value.response["ResponseMetadata"]["HTTPStatusCode"] == 402
    assert error["Code"] == "ServiceQuotaExceededException"
    assert "one session per contract port" in error["Message"]
    assert "bubblewrap" in error["Message"]

    assert invoke(data, arn, first, "again")["turns"] == ["hello", "again"]  # the first session is unharmed
    data.stop_runtime_session(agentRuntimeArn=arn, runtimeSessionId=first)
    assert invoke(data, arn, second, "now")["session"] == second  # the port was given back
    data.stop_runtime_session(agentRuntimeArn=arn, runtimeSessionId=second)


def test_an_agent_that_honours_port_runs_sessions_side_by_side(clients: tuple[Any, Any]) -> None:
    control, data = clients
    arn = deploy(control, "testbed")["agentRuntimeArn"]
    sessions = [new_session_id() for _ in range(3)]
    for session in sessions:
        invoke(data, arn, session, "hi")
    for session in sessions:  # all three are still live, and each answers
        invoke(data, arn, session, "again")
        data.stop_runtime_session(agentRuntimeArn=arn, runtimeSessionId=session)
