"""Session logs end to end: a real ``hangar serve``, an agent printing to stdout and stderr, read back through the
CloudWatch Logs API with boto3, the aws CLI v1 (``--endpoint-url``) and ``hangar logs``.

What is proven: both streams of a live session reach its log stream (AgentCore's group and stream names, ms
timestamps); GetLogEvents' forward/backward tokens walk the stream and stop; FilterLogEvents matches terms and
phrases, pages, and narrows by stream and time; a flood stays within the session's budget; hostile requests get
the JSON protocol's AWS errors; an ended session's log survives a restart. Aws CLI v1 has no ``aws logs tail``:
``hangar logs --follow`` is the follow path and is tested here. No timing thresholds.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
from botocore.exceptions import ClientError

from tests.dataplane.support import new_session_id, wait_for
from tests.observability.logged import Logged, LoggedSetup, aws_cli_env
from tests.support.server import HANGAR_BIN, HangarServer

SESSION_LOG_BYTES = 256 * 1024
AWS = Path(sys.executable).parent / "aws"


LOGGED = LoggedSetup(  # the `logged` fixture's server (conftest.py): the default backend, a small log budget
    "hangar-logs-",
    out=("hello from stdout", "a shared phrase here"),
    err="oops from stderr",
    env={"HANGAR_SESSION_LOG_BYTES": str(SESSION_LOG_BYTES)},
)


def test_groups_and_streams_have_agentcore_names(logged: Logged) -> None:
    logs = logged.server.boto3_client("logs")
    groups = logs.describe_log_groups(logGroupNamePrefix="/aws/bedrock-agentcore/runtimes/")["logGroups"]
    mine = [g for g in groups if g["logGroupName"] == logged.group]
    assert len(mine) == 1 and mine[0]["storedBytes"] > 0
    assert mine[0]["logGroupArn"] == f"arn:aws:logs:us-west-2:123456789012:log-group:{logged.group}"
    assert logs.describe_log_groups(logGroupNamePrefix="/aws/nothing-here")["logGroups"] == []
    streams = logs.describe_log_streams(logGroupName=logged.group, orderBy="LastEventTime", descending=True)
    row = next(s for s in streams["logStreams"] if s["logStreamName"] == logged.stream)
    day = time.strftime("%Y/%m/%d", time.gmtime(row["creationTime"] / 1000))
    assert logged.stream == f"{day}/[runtime-logs]{logged.session_id}"
    assert row["firstEventTimestamp"] <= row["lastEventTimestamp"]
    assert row["firstEventTimestamp"] > 1_600_000_000_000  # milliseconds
    prefixed = logs.describe_log_streams(logGroupName=logged.group, logStreamNamePrefix=logged.stream[:10])
    assert logged.stream in [s["logStreamName"] for s in prefixed["logStreams"]]


def test_stdout_and_stderr_both_reach_the_stream(logged: Logged) -> None:
    lines = logged.messages()
    for expected in ("hello from stdout", "a shared phrase here", "oops from stderr"):
        assert expected in lines
    assert lines.index("hello from stdout") < lines.index("a shared phrase here")


def test_get_log_events_tokens_walk_forward_and_back(logged: Logged) -> None:
    logs = logged.server.boto3_client("logs")
    whole = logs.get_log_events(logGroupName=logged.group, logStreamName=logged.stream, startFromHead=True)
    everything = [e["message"] for e in whole["events"]]
    forward: list[str] = []
    page = logs.get_log_events(logGroupName=logged.group, logStreamName=logged.stream, startFromHead=True, limit=1)
    while page["events"]:
        forward += [e["message"] for e in page["events"]]
        token = page["nextForwardToken"]
        page = logs.get_log_events(logGroupName=logged.group, logStreamName=logged.stream, nextToken=token, limit=1)
    assert forward == everything
    assert page["nextForwardToken"] == token  # the end: the same token comes back
    backward: list[str] = []
    page = logs.get_log_events(logGroupName=logged.group, logStreamName=logged.stream, limit=2)  # the newest two
    while page["events"]:
        backward = [e["message"] for e in page["events"]] + backward
        page = logs.get_log_events(
            logGroupName=logged.group, logStreamName=logged.stream, nextToken=page["nextBackwardToken"], limit=2
        )
    assert backward == everything
    first = whole["events"][0]["timestamp"]
    later = logs.get_log_events(
        logGroupName=logged.group, logStreamName=logged.stream, startFromHead=True, startTime=first + 10**9
    )
    assert later["events"] == []


def test_filter_log_events_terms_phrases_streams_and_pages(logged: Logged) -> None:
    logs = logged.server.boto3_client("logs")

    def found(**query: Any) -> list[str]:
        pages = logs.get_paginator("filter_log_events").paginate(logGroupName=logged.group, **query)
        return [e["message"] for page in pages for e in page["events"]]

    assert found(filterPattern='"shared phrase"') == ["a shared phrase here"]
    assert found(filterPattern="from -stderr", logStreamNames=[logged.stream]) == ["hello from stdout"]
    assert found(filterPattern="?oops ?hello") == ["hello from stdout", "oops from stderr"]
    assert found(filterPattern="FROM") == []  # terms are case-sensitive, as CloudWatch's are
    everything = found(logStreamNamePrefix=logged.stream)
    paged = found(logStreamNames=[logged.stream], PaginationConfig={"PageSize": 1})
    assert paged == everything and len(everything) >= 4
    assert found(startTime=int(time.time() * 1000) + 3_600_000) == []
    event = logs.filter_log_events(logGroupName=logged.group, filterPattern="oops")["events"][0]
    assert event["logStreamName"] == logged.stream and event["eventId"]


def aws(server: HangarServer, *args: str) -> Any:
    command = [str(AWS), "logs", *args, "--endpoint-url", server.url, "--region", "us-west-2", "--output", "json"]
    result = subprocess.run(command, capture_output=True, text=True, env=aws_cli_env(server), timeout=120)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def test_the_aws_cli_reads_the_logs(logged: Logged) -> None:
    streams = aws(logged.server, "describe-log-streams", "--log-group-name", logged.group)["logStreams"]
    assert logged.stream in [s["logStreamName"] for s in streams]
    got = aws(
        logged.server,
        "get-log-events",
        "--log-group-name",
        logged.group,
        "--log-stream-name",
        logged.stream,
        "--start-from-head",
    )
    assert {"hello from stdout", "oops from stderr"} <= {e["message"] for e in got["events"]}
    filtered = aws(logged.server, "filter-log-events", "--log-group-name", logged.group, "--filter-pattern", "oops")
    assert [e["message"] for e in filtered["events"]] == ["oops from stderr"]


def test_hostile_requests_get_aws_errors(logged: Logged) -> None:
    logs = logged.server.boto3_client("logs", parameter_validation=False)

    def code(call: Any, **query: Any) -> str:
        with pytest.raises(ClientError) as raised:
            call(**query)
        return str(raised.value.response["Error"]["Code"])

    group = {"logGroupName": logged.group}
    assert code(logs.describe_log_streams, logGroupName="/aws/bedrock-agentcore/runtimes/nope-DEFAULT") == (
        "ResourceNotFoundException"
    )
    assert code(logs.get_log_events, **group, logStreamName="no/such/stream") == "ResourceNotFoundException"
    stream = {**group, "logStreamName": logged.stream}
    assert code(logs.get_log_events, **stream, nextToken="f/not-a-number/s") == "InvalidParameterException"
    assert code(logs.get_log_events, **stream, limit=10**9) == "InvalidParameterException"
    assert code(logs.get_log_events, **stream, limit="many") == "InvalidParameterException"
    assert code(logs.filter_log_events, **group, nextToken="!!garbage!!") == "InvalidParameterException"
    assert code(logs.filter_log_events, **group, filterPattern='{ $.level = "x" }') == "InvalidParameterException"
    assert code(logs.filter_log_events, **group, filterPattern='"unterminated') == "InvalidParameterException"
    assert code(logs.filter_log_events, **group, logStreamNames=[], logStreamNamePrefix="x") == (
        "InvalidParameterException"
    )
    assert code(logs.describe_log_groups, limit=51) == "InvalidParameterException"
    assert code(logs.describe_log_groups, nextToken="@@") == "InvalidParameterException"
    assert code(logs.put_log_events, **stream, logEvents=[{"timestamp": 1, "message": "x"}]) == (
        "UnknownOperationException"
    )
    unsigned = httpx.post(
        logged.server.url,
        headers={"x-amz-target": "Logs_20140328.DescribeLogGroups", "content-type": "application/x-amz-json-1.1"},
        content=b"{}",
    )
    assert unsigned.status_code == 403 and "__type" in unsigned.json()
    wrong_body = logged.server.boto3_client("logs", parameter_validation=False)
    assert code(wrong_body.get_log_events, logGroupName=["not", "a", "string"], logStreamName="x") == (
        "InvalidParameterException"
    )


def test_a_flood_stays_within_the_session_budget(logged: Logged) -> None:
    session_id = new_session_id()
    logged.invoke({"partial": "no newline at the end"})
    logged.invoke({"out": ["first line"]}, session_id=session_id)
    logged.invoke({"flood": 4 * SESSION_LOG_BYTES}, session_id=session_id)
    logged.invoke({"out": ["after the flood"]}, session_id=session_id)
    logs = logged.server.boto3_client("logs")

    def stream_row() -> dict[str, Any] | None:
        rows = logs.describe_log_streams(logGroupName=logged.group)["logStreams"]
        return next((r for r in rows if r["logStreamName"].endswith(session_id)), None)

    name = wait_for(stream_row, timeout=30)["logStreamName"]
    wait_for(lambda: "no newline at the end" in logged.messages(), timeout=30)
    wait_for(lambda: "after the flood" in found_messages(logs, logged.group, name), timeout=60)
    data = logged.server.boto3_client("bedrock-agentcore")
    data.stop_runtime_session(agentRuntimeArn=logged.runtime["agentRuntimeArn"], runtimeSessionId=session_id)
    row = wait_for(stream_row, timeout=30)
    assert 0 < row["storedBytes"] <= SESSION_LOG_BYTES + SESSION_LOG_BYTES // 4
    kept = found_messages(logs, logged.group, name)
    assert kept[-1] == "after the flood"
    assert sum(len(m) for m in kept) <= SESSION_LOG_BYTES  # skipped (too far behind) or rotated out, oldest first
    assert "first line" not in kept or any(m.startswith("[hangar: ") for m in kept)


def found_messages(logs: Any, group: str, stream: str) -> list[str]:
    pages = logs.get_paginator("filter_log_events").paginate(logGroupName=group, logStreamNames=[stream])
    return [e["message"] for page in pages for e in page["events"]]


def hangar_logs(server: HangarServer, *args: str) -> subprocess.Popen[str]:
    env = {key: value for key, value in os.environ.items() if not key.startswith(("AWS_", "HANGAR_"))}
    env.update(HANGAR_ENDPOINT_URL=server.url, HANGAR_DATA_DIR=str(server.data_dir), COLUMNS="200")
    return subprocess.Popen(
        [str(HANGAR_BIN), "logs", *args], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )


def test_hangar_logs_prints_and_follows(logged: Logged) -> None:
    name = logged.runtime["agentRuntimeName"]
    once = hangar_logs(logged.server, name, "--session-id", logged.session_id, "--since", "1h")
    out, err = once.communicate(timeout=120)
    assert once.returncode == 0, err
    assert "hello from stdout" in out and "oops from stderr" in out
    assert "oops from stderr" not in hangar_logs(logged.server, name, "--filter", "hello").communicate(timeout=120)[0]
    session_id = new_session_id()
    follower = hangar_logs(logged.server, name, "--session-id", session_id, "--follow")
    try:
        logged.invoke({"out": ["followed line one"], "err": ["followed line two"]}, session_id=session_id)
        assert follower.stdout is not None
        seen: list[str] = []
        while not any("followed line two" in line for line in seen):
            line = follower.stdout.readline()
            assert line, f"hangar logs --follow ended: {follower.stderr.read() if follower.stderr else ''}"
            seen.append(line)
        assert any("followed line one" in line for line in seen)
    finally:
        follower.send_signal(signal.SIGINT)
        follower.wait(timeout=30)
    assert follower.returncode == 0, follower.stderr.read() if follower.stderr else ""
    missing = hangar_logs(logged.server, "no-such-runtime")
    missing.communicate(timeout=120)
    assert missing.returncode == 3


def test_logs_survive_the_session_and_a_restart(logged: Logged) -> None:
    data = logged.server.boto3_client("bedrock-agentcore")
    logged.invoke({"out": ["the last words"]})
    data.stop_runtime_session(agentRuntimeArn=logged.runtime["agentRuntimeArn"], runtimeSessionId=logged.session_id)
    before = logged.messages()
    assert "the last words" in before
    logged.server.stop()
    logged.server.start()
    assert logged.messages() == before
    # The same session id again continues its stream, after what was kept.
    logged.invoke({"out": ["back again"]})
    wait_for(lambda: logged.messages()[-1:] == ["back again"], timeout=30)
    assert logged.messages()[: len(before)] == before
