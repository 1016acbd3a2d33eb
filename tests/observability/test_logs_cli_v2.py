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
import queue
import subprocess
import threading
from pathlib import Path
from typing import Any

from tests.observability.logged import Logged, LoggedSetup, aws_cli_env

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


# The `logged` fixture's server (conftest.py). The process backend: what is under test is the API the CLI reads,
# not the sandbox (test_logs.py runs the default backend); its capture is the same file follower.
LOGGED = LoggedSetup(
    "hangar-logs-v2-",
    out=("v2 hello from stdout", "v2 shared phrase", JSON_LINE),
    err="v2 oops from stderr",
    env={"HANGAR_SANDBOX_BACKEND": "process"},
    missing=_v2_missing,
)


def command(logged: Logged, *args: str) -> list[str]:
    return [str(AWS_V2), "logs", *args, "--endpoint-url", logged.server.url, "--region", "us-west-2"]


def run(logged: Logged, *args: str) -> str:
    result = subprocess.run(
        command(logged, *args), capture_output=True, text=True, env=aws_cli_env(logged.server), timeout=WAIT_S
    )
    assert result.returncode == 0, result.stderr
    return result.stdout


def cli_json(logged: Logged, *args: str) -> Any:
    return json.loads(run(logged, *args, "--output", "json"))


def test_tail_since_prints_stdout_and_stderr_in_each_format(logged: Logged) -> None:
    short = run(logged, "tail", logged.group, "--since", "1h", "--format", "short")
    assert "v2 hello from stdout" in short and "v2 oops from stderr" in short
    assert short.index("v2 hello from stdout") < short.index("v2 shared phrase")
    assert logged.stream not in short  # short: timestamp and message only
    detailed = run(logged, "tail", logged.group, "--since", "1h", "--format", "detailed")
    line = next(row for row in detailed.splitlines() if row.endswith("v2 oops from stderr"))
    assert logged.stream in line  # detailed: timestamp, stream, message
    as_json = run(logged, "tail", logged.group, "--since", "1h", "--format", "json")
    assert "v2 hello from stdout" in as_json
    assert '    "level": "info",' in as_json.splitlines()  # json: a JSON message is pretty-printed
    narrowed = run(logged, "tail", logged.group, "--since", "1h", "--filter-pattern", "oops")
    assert "v2 oops from stderr" in narrowed and "v2 hello from stdout" not in narrowed
    by_stream = run(logged, "tail", logged.group, "--since", "1h", "--log-stream-names", logged.stream)
    assert "v2 shared phrase" in by_stream
    elsewhere = run(logged, "tail", logged.group, "--since", "1h", "--log-stream-name-prefix", "1999/")
    assert elsewhere.strip() == ""


def test_tail_follow_prints_a_new_line(logged: Logged) -> None:
    day_prefix = logged.stream.split("[runtime-logs]")[0] + "[runtime-logs]"  # the starter toolkit's prefix
    follower = subprocess.Popen(
        command(logged, "tail", logged.group, "--follow", "--since", "1h", "--log-stream-name-prefix", day_prefix),
        env=aws_cli_env(logged.server),
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
    group = ("--log-group-name", logged.group)
    stream = (*group, "--log-stream-name", logged.stream)
    filtered = cli_json(logged, "filter-log-events", *group, "--filter-pattern", "oops")
    assert [e["message"] for e in filtered["events"]] == ["v2 oops from stderr"]
    assert filtered["events"][0]["logStreamName"] == logged.stream
    phrase = cli_json(logged, "filter-log-events", *group, "--filter-pattern", '"shared phrase"')
    assert [e["message"] for e in phrase["events"]] == ["v2 shared phrase"]
    paged = cli_json(logged, "filter-log-events", *group, "--log-stream-names", logged.stream, "--page-size", "1")
    assert [e["message"] for e in paged["events"]] == logged.messages()  # the CLI follows nextToken event by event
    got = cli_json(logged, "get-log-events", *stream, "--start-from-head")
    assert [e["message"] for e in got["events"]] == logged.messages()
    assert {"v2 hello from stdout", "v2 oops from stderr"} <= {e["message"] for e in got["events"]}
    newest = cli_json(logged, "get-log-events", *stream, "--limit", "1")
    assert [e["message"] for e in newest["events"]] == logged.messages()[-1:]
    groups = cli_json(logged, "describe-log-groups", "--log-group-name-prefix", "/aws/bedrock-agentcore/runtimes/")
    assert logged.group in [g["logGroupName"] for g in groups["logGroups"]]
