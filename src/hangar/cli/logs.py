"""``hangar logs RUNTIME``: a runtime's session logs (stdout and stderr), through the server's CloudWatch Logs API.

The same calls ``aws logs filter-log-events`` makes, so what this prints is what the AWS tools see. ``--follow``
polls FilterLogEvents from the newest timestamp seen (events of that millisecond already printed are skipped by
their eventId); it is the follow path, because aws CLI v1 has no ``aws logs tail``.
"""

from __future__ import annotations

import re
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import typer
from botocore.client import BaseClient
from botocore.exceptions import ClientError

from hangar.cli.client import DATA_DIR, ENDPOINT_URL, EXIT_USAGE, REGION, aws_errors, connect, console, fail
from hangar.cli.dataplane import runtime_arn

GROUP_PREFIX = "/aws/bedrock-agentcore/runtimes/"
STREAM_KIND = "[runtime-logs]"
FOLLOW_INTERVAL_S = 1.0
_SINCE = re.compile(r"^(\d+)([smhdw])$")
_UNIT_S = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


def register(app: typer.Typer) -> None:
    app.command("logs")(logs)


def logs(
    runtime: str = typer.Argument(..., help="Runtime name, id or ARN."),
    session_id: str | None = typer.Option(None, "--session-id", "-s", help="Only this session's stream."),
    endpoint: str = typer.Option("DEFAULT", "--endpoint", "-e", help="Endpoint (qualifier) whose log group to read."),
    follow: bool = typer.Option(False, "--follow", "-f", help="Keep printing new events until interrupted."),
    since: str | None = typer.Option(None, "--since", help="Only events newer than this: 30s, 10m, 2h, 1d, 1w."),
    filter_pattern: str | None = typer.Option(
        None, "--filter", help="CloudWatch filter pattern: terms, quoted phrases, -excluded, ?any-of."
    ),
    endpoint_url: str = ENDPOINT_URL,
    data_dir: Path | None = DATA_DIR,
    region: str | None = REGION,
) -> None:
    """Print a runtime's session logs (stdout and stderr), oldest first; --follow keeps printing new ones."""
    start = None
    if since is not None:
        found = _SINCE.match(since.strip())
        if found is None:
            fail(f"--since {since!r}: give a number and a unit (s, m, h, d, w), e.g. 10m", EXIT_USAGE)
        start = int((time.time() - int(found.group(1)) * _UNIT_S[found.group(2)]) * 1000)
    hangar = connect(endpoint_url, data_dir, region)
    with aws_errors():
        arn = runtime_arn(hangar, runtime)
        group = f"{GROUP_PREFIX}{arn.rsplit('/', 1)[-1]}-{endpoint}"
        reader = _Reader(hangar.client("logs"), group, session_id, filter_pattern, start)
        try:
            while True:
                reader.poll(waiting=follow)
                if not follow:
                    return
                time.sleep(FOLLOW_INTERVAL_S)
        except KeyboardInterrupt:  # how a follow ends: quietly, exit 0
            return


class _Reader:
    """Pages through FilterLogEvents, remembering where it stopped so a follow prints each event once."""

    def __init__(
        self, client: BaseClient, group: str, session_id: str | None, pattern: str | None, start: int | None
    ) -> None:
        self.client = client
        self.group = group
        self.session_id = session_id
        self.pattern = pattern
        self.start = start
        self.seen: set[str] = set()  # eventIds of the newest millisecond printed

    def poll(self, waiting: bool) -> None:
        request: dict[str, Any] = {"logGroupName": self.group}
        try:
            if self.session_id is not None:
                streams = self._session_streams()
                if not streams:
                    if waiting:
                        return
                    fail(f"no log stream for session {self.session_id} in {self.group}", 3)
                request["logStreamNames"] = streams[-100:]
            if self.pattern:
                request["filterPattern"] = self.pattern
            if self.start is not None:
                request["startTime"] = self.start
            for page in self.client.get_paginator("filter_log_events").paginate(**request):
                for event in page.get("events", []):
                    self._print(event)
        except ClientError as exc:
            if waiting and exc.response.get("Error", {}).get("Code") == "ResourceNotFoundException":
                return  # no session of this endpoint has printed yet
            raise

    def _session_streams(self) -> list[str]:
        suffix = f"{STREAM_KIND}{self.session_id}"
        names = []
        for page in self.client.get_paginator("describe_log_streams").paginate(logGroupName=self.group):
            names += [s["logStreamName"] for s in page["logStreams"] if s["logStreamName"].endswith(suffix)]
        return sorted(names)

    def _print(self, event: dict[str, Any]) -> None:
        timestamp = int(event["timestamp"])
        if event["eventId"] in self.seen:
            return
        if self.start is None or timestamp > self.start:
            self.start, self.seen = timestamp, set()
        self.seen.add(event["eventId"])
        when = datetime.fromtimestamp(timestamp / 1000, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
        session = event["logStreamName"].rsplit(STREAM_KIND, 1)[-1]
        prefix = "" if self.session_id else f"{session} "
        console.out(f"{when} {prefix}{event['message']}", highlight=False)
