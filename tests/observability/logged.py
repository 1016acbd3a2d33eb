"""Session logs read back in tests: the ``logged`` fixture's types (tests/observability/conftest.py makes it) and
the environment for an ``aws`` CLI pointed at a test server."""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from botocore.exceptions import ClientError

from tests.support.server import HangarServer


@dataclass
class Logged:
    """A deployed ``logger`` runtime, its log group and its first session's stream."""

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

    def stream_of(self, session_id: str) -> str | None:
        """The stream of ``session_id`` once it is listed (None until then)."""
        try:
            found = self.server.boto3_client("logs").describe_log_streams(logGroupName=self.group)["logStreams"]
        except ClientError:
            return None
        return next((s["logStreamName"] for s in found if s["logStreamName"].endswith(session_id)), None)

    def messages(self, stream: str | None = None) -> list[str]:
        """Every message of ``stream`` (the first session's by default), oldest first."""
        logs = self.server.boto3_client("logs")
        events = logs.get_log_events(logGroupName=self.group, logStreamName=stream or self.stream, startFromHead=True)
        return [e["message"] for e in events["events"]]


@dataclass(frozen=True)
class LoggedSetup:
    """A module's ``logged`` server: its data dir prefix, server env, and what the first call prints."""

    prefix: str
    out: tuple[str, ...]
    err: str  # one stderr line: stored last-or-later, so the fixture waits for it
    env: dict[str, str] = field(default_factory=dict)
    missing: Callable[[], str | None] | None = None  # a reason to skip (a client the module needs is absent)


def aws_cli_env(server: HangarServer) -> dict[str, str]:
    """The environment for an ``aws`` CLI (v1 or v2) signed with the server's admin key and nothing of ours."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    env.update(
        AWS_SHARED_CREDENTIALS_FILE=str(server.credentials_file),
        AWS_CONFIG_FILE=os.devnull,
        AWS_EC2_METADATA_DISABLED="true",
        AWS_PAGER="",  # v2 pipes output to `less` otherwise
    )
    return env
