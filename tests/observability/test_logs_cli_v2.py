"""Session logs read with the aws CLI v2 (Debian's ``awscli`` 2.9.x, ``/usr/bin/aws``) against a real ``hangar serve``.

The venv's ``aws`` is v1, which has no ``aws logs tail``; v2's tail polls FilterLogEvents (``interleaved``,
``startTime``, ``nextToken``, ``filterPattern``, ``logStreamNames``/``logStreamNamePrefix``; 2.9.19 does not call
StartLiveTail). What is proven: ``tail --since`` in its three formats prints both stdout and stderr lines,
``tail --follow`` prints a line the agent prints after it started, ``filter-log-events`` (with a pattern, paged one
event a page) and ``get-log-events`` give what boto3 gives. A missing v2 skips, and fails under
``HANGAR_REQUIRE_ISOLATION`` (tests/conftest.py). No timing thresholds: waits are bounded, never measured.
"""

from __future__ import annotations

import json
import os
import queue
import subprocess
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from botocore.exceptions import ClientError

from tests.dataplane.support import deploy, new_session_id, seeded_server, wait_for
from tests.support.server import HangarServer

AWS_V2 = Path("/usr/bin/aws")  # explicit: the venv's `aws` is v1
WAIT_S = 120.0
JSON_LINE = '{"level": "info", "step": 1}'


def _v2_missing() -> str | None:
    if not AWS_V2.exists():
        return "the aws CLI v2 is not installed (/usr/bin/aws: `apt-get install awscli`, scripts/system-deps test)"
    version = subprocess.run([str(AWS_V2), "--version"], capture_output=True, text=True, timeout=60)
    if not (version.stdout + version.stderr).startswith("aws-cli/2."):
        return f"/usr/bin/aws is not the aws CLI v2: {version.stdout or version.stderr}"
    return None


@dataclass
class Logged:
    server: HangarServer
    runtime: dict[str, Any]
    group: str
    session_id: str
    stream: str

    def invoke(self, payload: dict[str, Any], session_id: str | None = None) -> None:
        data = self.server.boto3_client("bedrock-agentcore")
        data.invoke_agent_runtime(
            agentRuntimeArn=self.runtime["agentRuntimeArn"],
            runtimeSessionId=session_id or self.session_id,
            payload=json.dumps(payload),
        )["response"].read()

    def env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
        env.update(
            AWS_SHARED_CREDENTIALS_FILE=str(self.server.credentials_file),
            AWS_CONFIG_FILE=os.devnull,
            AWS_EC2_METADATA_DISABLED="true",
            AWS_PAGER="",  # v2 pipes output to `less` otherwise
        )
        return env

    def command(self, *args: str) -> list[str]:
        return [str(AWS_V2), "logs", *args, "--endpoint-url", self.server.url, "--region", "us-west-2"]

    def run(self, *args: str) -> str:
        result = subprocess.run(self.command(*args), capture_output=True, text=True, env=self.env(), timeout=WAIT_S)
        assert result.returncode == 0, result.stderr
        return result.stdout

    def json(self, *args: str) -> Any:
        return json.loads(self.run(*args, "--output", "json"))


def stream_of(logged: Logged, session_id: str) -> str | None:
    logs = logged.server.boto3_client("logs")
    try:
        found = logs.describe_log_streams(logGroupName=logged.group)["logStreams"]
    except ClientError:
        return None
    return next((s["logStreamName"] for s in found if s["logStreamName"].endswith(session_id)), None)


def messages(logged: Logged, stream: str) -> list[str]:
    logs = logged.server.boto3_client("logs")
    events = logs.get_log_events(logGroupName=logged.group, logStreamName=stream, startFromHead=True)["events"]
    return [e["message"] for e in events]


@pytest.fixture(scope="module")
def logged() -> Iterator[Logged]:
    missing = _v2_missing()
    if missing:
        pytest.skip(missing)
    # The process backend: what is under test is the API the CLI reads, not the sandbox (test_logs.py runs the
    # default backend); its capture is the same file follower.
    with seeded_server("hangar-logs-v2-", ("logger",), env={"HANGAR_SANDBOX_BACKEND": "process"}) as server:
        runtime = deploy(server.boto3_client("bedrock-agentcore-control"), "logger")
        group = f"/aws/bedrock-agentcore/runtimes/{runtime['agentRuntimeId']}-DEFAULT"
        seen = Logged(server, runtime, group, new_session_id(), "")
        seen.invoke({"out": ["v2 hello from stdout", "v2 shared phrase", JSON_LINE], "err": ["v2 oops from stderr"]})
        seen.stream = wait_for(lambda: stream_of(seen, seen.session_id), timeout=WAIT_S)
        wait_for(lambda: "v2 oops from stderr" in messages(seen, seen.stream), timeout=WAIT_S)
        yield seen


def test_tail_since_prints_stdout_and_stderr_in_each_format(logged: Logged) -> None:
    short = logged.run("tail", logged.group, "--since", "1h", "--format", "short")
    assert "v2 hello from stdout" in short and "v2 oops from stderr" in short
    assert short.index("v2 hello from stdout") < short.index("v2 shared phrase")
    assert logged.stream not in short  # short: timestamp and message only
    detailed = logged.run("tail", logged.group, "--since", "1h", "--format", "detailed")
    line = next(row for row in detailed.splitlines() if row.endswith("v2 oops from stderr"))
    assert logged.stream in line  # detailed: timestamp, stream, message
    as_json = logged.run("tail", logged.group, "--since", "1h", "--format", "json")
    assert "v2 hello from stdout" in as_json
    assert '    "level": "info",' in as_json.splitlines()  # json: a JSON message is pretty-printed
    narrowed = logged.run("tail", logged.group, "--since", "1h", "--filter-pattern", "oops")
    assert "v2 oops from stderr" in narrowed and "v2 hello from stdout" not in narrowed
    by_stream = logged.run("tail", logged.group, "--since", "1h", "--log-stream-names", logged.stream)
    assert "v2 shared phrase" in by_stream
    elsewhere = logged.run("tail", logged.group, "--since", "1h", "--log-stream-name-prefix", "1999/")
    assert elsewhere.strip() == ""


def test_tail_follow_prints_a_new_line(logged: Logged) -> None:
    day_prefix = logged.stream.split("[runtime-logs]")[0] + "[runtime-logs]"  # the starter toolkit's prefix
    follower = subprocess.Popen(
        logged.command("tail", logged.group, "--follow", "--since", "1h", "--log-stream-name-prefix", day_prefix),
        env=logged.env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    lines: queue.Queue[str | None] = queue.Queue()

    def read() -> None:
        assert follower.stdout is not None
        for row in follower.stdout:
            lines.put(row)
        lines.put(None)  # the follower ended

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    seen: list[str] = []

    def until_printed(*wanted: str) -> None:
        while not all(any(row.rstrip("\n").endswith(text) for row in seen) for text in wanted):
            row = lines.get(timeout=WAIT_S)  # bounded: a follower that prints nothing fails here
            assert row is not None, f"aws logs tail --follow ended: {follower.stderr.read() if follower.stderr else ''}"
            seen.append(row)

    try:
        until_printed("v2 oops from stderr")  # its first poll was answered: what follows comes from a later one
        logged.invoke({"out": ["followed by v2 tail"], "err": ["followed stderr line"]})
        until_printed("followed by v2 tail", "followed stderr line")
        assert any(logged.stream in row for row in seen)  # the default format (detailed) names the stream
    finally:
        follower.terminate()
        follower.wait(timeout=30)
        reader.join(timeout=30)


def test_filter_and_get_log_events(logged: Logged) -> None:
    filtered = logged.json("filter-log-events", "--log-group-name", logged.group, "--filter-pattern", "oops")
    assert [e["message"] for e in filtered["events"]] == ["v2 oops from stderr"]
    assert filtered["events"][0]["logStreamName"] == logged.stream
    phrase = logged.json("filter-log-events", "--log-group-name", logged.group, "--filter-pattern", '"shared phrase"')
    assert [e["message"] for e in phrase["events"]] == ["v2 shared phrase"]
    paged = logged.json(
        "filter-log-events", "--log-group-name", logged.group, "--log-stream-names", logged.stream, "--page-size", "1"
    )  # the CLI follows nextToken one event at a time
    assert [e["message"] for e in paged["events"]] == messages(logged, logged.stream)
    got = logged.json(
        "get-log-events", "--log-group-name", logged.group, "--log-stream-name", logged.stream, "--start-from-head"
    )
    assert [e["message"] for e in got["events"]] == messages(logged, logged.stream)
    assert {"v2 hello from stdout", "v2 oops from stderr"} <= {e["message"] for e in got["events"]}
    newest = logged.json(
        "get-log-events", "--log-group-name", logged.group, "--log-stream-name", logged.stream, "--limit", "1"
    )
    assert [e["message"] for e in newest["events"]] == messages(logged, logged.stream)[-1:]
    groups = logged.json("describe-log-groups", "--log-group-name-prefix", "/aws/bedrock-agentcore/runtimes/")
    assert logged.group in [g["logGroupName"] for g in groups["logGroups"]]
