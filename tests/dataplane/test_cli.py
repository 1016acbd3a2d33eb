"""``hangar invoke``, ``hangar exec`` and ``hangar sessions``: the real binary against the real server."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

from tests.dataplane.support import deploy, new_session_id, wait_for
from tests.support.server import HangarServer

HANGAR = Path(sys.executable).parent / "hangar"


def _hangar(server: HangarServer, *args: str) -> subprocess.CompletedProcess[str]:
    """Run ``hangar ARGS`` against ``server`` (its options go before a ``--``, if there is one)."""
    split = args.index("--") if "--" in args else len(args)
    options = ["--endpoint-url", server.url, "--data-dir", str(server.data_dir)]
    return subprocess.run(
        [str(HANGAR), *args[:split], *options, *args[split:]],
        env={**os.environ, "COLUMNS": "300"},  # tables keep every column (a narrow terminal drops some)
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_invoke_by_name_with_session_reuse(server: HangarServer, control: Any) -> None:
    runtime = deploy(control, "testbed", description="cli")
    session_id = new_session_id()
    first = _hangar(server, "invoke", runtime["agentRuntimeName"], '{"action": "count"}', "--session-id", session_id)
    assert first.returncode == 0, first.stderr
    assert json.loads(first.stdout)["count"] == 1 and f"session: {session_id}" in first.stderr
    second = _hangar(server, "invoke", runtime["agentRuntimeArn"], '{"action": "count"}', "-s", session_id)
    assert json.loads(second.stdout)["count"] == 2

    listed = _hangar(server, "sessions", "list", "--json")
    assert listed.returncode == 0, listed.stderr
    mine = [s for s in json.loads(listed.stdout) if s["runtimeSessionId"] == session_id]
    assert len(mine) == 1 and mine[0]["state"] == "Idle" and mine[0]["agentRuntimeVersion"] == "1"
    assert mine[0]["memoryBytes"] > 0

    ran = _hangar(
        server, "exec", runtime["agentRuntimeName"], "--session-id", session_id, "--", "sh", "-c", "echo hi; exit 7"
    )
    assert (ran.returncode, ran.stdout) == (7, "hi\n")

    stopped = _hangar(server, "sessions", "stop", runtime["agentRuntimeName"], session_id)
    assert stopped.returncode == 0, stopped.stderr
    again = _hangar(server, "sessions", "stop", runtime["agentRuntimeName"], session_id)
    assert again.returncode == 3 and "ResourceNotFoundException" in again.stderr  # docs/cli.md: 3 = not found


def test_invoke_stream_prints_sse_chunks(server: HangarServer, control: Any) -> None:
    runtime = deploy(control, "streaming", description="cli")
    done = _hangar(server, "invoke", runtime["agentRuntimeName"], '{"prompt": "p", "count": 2}', "--stream")
    assert done.returncode == 0, done.stderr
    events = [json.loads(line.removeprefix("data: ")) for line in done.stdout.splitlines() if line]
    assert events == [
        {"index": 0, "partial": "p #0"},
        {"index": 1, "partial": "p #1"},
        {"complete": True, "mode": "sync"},
    ]


def test_invoke_unknown_name_fails_readably(server: HangarServer) -> None:
    done = _hangar(server, "invoke", "no_such_agent", "{}")
    assert done.returncode == 3 and "no agent runtime named 'no_such_agent'" in done.stderr


def test_sessions_templates_shows_the_versions_template_and_list_shows_how_sessions_started(
    server: HangarServer, control: Any
) -> None:
    runtime = deploy(control, "echo", description="cli-templates")
    version = f"{runtime['agentRuntimeId']}/1"

    def template_ready() -> dict[str, Any] | None:
        shown = _hangar(server, "sessions", "templates", "--json")
        assert shown.returncode == 0, shown.stderr
        entry = json.loads(shown.stdout)["versions"].get(version)
        return entry if entry and (entry.get("template") or {}).get("alive") else None

    wait_for(template_ready, timeout=60)
    session_id = new_session_id()
    invoked = _hangar(server, "invoke", runtime["agentRuntimeName"], '{"x": 1}', "--session-id", session_id)
    assert invoked.returncode == 0, invoked.stderr

    table = _hangar(server, "sessions", "templates")
    assert table.returncode == 0, table.stderr
    assert "ready" in table.stdout and "runtime/version" in table.stdout
    listed = _hangar(server, "sessions", "list", "--json")
    mine = [s for s in json.loads(listed.stdout) if s["runtimeSessionId"] == session_id]
    assert [s["startKind"] for s in mine] == ["fork"]
    assert "start" in _hangar(server, "sessions", "list").stdout
