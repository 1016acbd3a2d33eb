"""The CLI's output layer against a real ``hangar serve``: ``--output table|json|yaml``, ``--quiet``, tables that fit
80 and 40 columns, documented exit codes, shell completion. The ``hangar`` binary runs as a subprocess."""

from __future__ import annotations

import json
import os
import subprocess
import uuid
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.support.server import HANGAR_BIN, HangarServer

AGENT = """\
from hangar.sdk import BedrockAgentCoreApp

app = BedrockAgentCoreApp()


@app.entrypoint
def invoke(payload):
    return {"echo": payload}


if __name__ == "__main__":
    app.run()
"""
NAME = "output_layer_agent_with_a_rather_long_name"


def cli(server: HangarServer, *args: str, columns: int | None = 200) -> subprocess.CompletedProcess[str]:
    env = {key: value for key, value in os.environ.items() if not key.startswith(("AWS_", "HANGAR_", "COLUMNS"))}
    env.update(HANGAR_ENDPOINT_URL=server.url, HANGAR_DATA_DIR=str(server.data_dir))
    if columns is not None:
        env["COLUMNS"] = str(columns)
    return subprocess.run([str(HANGAR_BIN), *args], env=env, capture_output=True, text=True, timeout=300)


def ok(server: HangarServer, *args: str, columns: int | None = 200) -> str:
    result = cli(server, *args, columns=columns)
    assert result.returncode == 0, f"hangar {' '.join(args)}: {result.returncode}\n{result.stdout}\n{result.stderr}"
    return result.stdout


@pytest.fixture(scope="module")
def runtime(hangar: HangarServer, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """One deployed runtime with a second endpoint and one live session."""
    folder = tmp_path_factory.mktemp("agent")
    (folder / "main.py").write_text(AGENT)
    deployed: dict[str, Any] = json.loads(ok(hangar, "deploy", str(folder), "--name", NAME, "--json"))
    ok(hangar, "endpoints", "create", NAME, "canary_endpoint_name", "--version", "1")
    session_id = f"output-{uuid.uuid4()}"
    data = hangar.boto3_client("bedrock-agentcore", read_timeout=120)
    data.invoke_agent_runtime(agentRuntimeArn=deployed["agentRuntimeArn"], runtimeSessionId=session_id, payload=b"{}")
    deployed["sessionId"] = session_id
    return deployed


def test_json_is_the_wire_shape_and_yaml_the_same_data(hangar: HangarServer, runtime: dict[str, Any]) -> None:
    control = hangar.boto3_client("bedrock-agentcore-control")
    wire = control.list_agent_runtimes()["agentRuntimes"]
    as_json = json.loads(ok(hangar, "runtimes", "list", "--output", "json"))
    assert [r["agentRuntimeArn"] for r in as_json] == [r["agentRuntimeArn"] for r in wire]
    assert set(as_json[0]) == set(wire[0]), "the same fields as ListAgentRuntimes"
    assert as_json[0]["lastUpdatedAt"] == wire[0]["lastUpdatedAt"].isoformat()
    assert yaml.safe_load(ok(hangar, "runtimes", "list", "-o", "yaml")) == as_json
    assert json.loads(ok(hangar, "runtimes", "list", "--json")) == as_json, "--json stays as a hidden alias"
    assert "--json" not in ok(hangar, "runtimes", "list", "--help")

    endpoints = json.loads(ok(hangar, "endpoints", "list", NAME, "-o", "json"))
    assert sorted(e["name"] for e in endpoints) == ["DEFAULT", "canary_endpoint_name"]
    assert yaml.safe_load(ok(hangar, "versions", "list", NAME, "-o", "yaml"))[0]["agentRuntimeVersion"] == "1"
    detail = yaml.safe_load(ok(hangar, "runtimes", "get", NAME, "-o", "yaml"))
    assert detail["agentRuntimeArn"] == runtime["agentRuntimeArn"] and "ResponseMetadata" not in detail
    sessions = json.loads(ok(hangar, "sessions", "list", "-o", "json"))
    assert runtime["sessionId"] in [s["runtimeSessionId"] for s in sessions]


def test_quiet_prints_one_id_or_arn_a_line(hangar: HangarServer, runtime: dict[str, Any]) -> None:
    assert runtime["agentRuntimeArn"] in ok(hangar, "runtimes", "list", "-q").splitlines()
    arns = ok(hangar, "endpoints", "list", NAME, "--quiet").splitlines()
    assert sorted(arn.rsplit("/", 1)[-1] for arn in arns) == ["DEFAULT", "canary_endpoint_name"]
    assert all(arn.startswith(runtime["agentRuntimeArn"] + "/runtime-endpoint/") for arn in arns)
    assert ok(hangar, "versions", "list", NAME, "-q").splitlines() == ["1"]
    assert runtime["sessionId"] in ok(hangar, "sessions", "list", "-q").splitlines()
    assert ok(hangar, "runtimes", "get", NAME, "-q").strip() == runtime["agentRuntimeArn"]


def headers(table: str) -> list[str]:
    line = next(line for line in table.splitlines() if line.startswith("┃"))
    return [cell.strip() for cell in line.strip("┃").split("┃")]


@pytest.mark.parametrize("columns", [80, 40])
def test_tables_fit_the_terminal(hangar: HangarServer, runtime: dict[str, Any], columns: int) -> None:
    wide = {
        ("runtimes", "list"): headers(ok(hangar, "runtimes", "list")),
        ("sessions", "list"): headers(ok(hangar, "sessions", "list")),
        ("endpoints", "list", NAME): headers(ok(hangar, "endpoints", "list", NAME)),
    }
    for command, all_headers in wide.items():
        table = ok(hangar, *command, columns=columns)
        lines = table.splitlines()
        assert all(len(line) <= columns for line in lines), f"{command} at {columns}:\n{table}"
        assert "…" not in table, f"{command} at {columns} cuts cells:\n{table}"
        kept = headers(table)
        assert kept and len(kept) < len(all_headers), f"{command} at {columns} drops columns:\n{table}"
        assert kept == [h for h in all_headers if h in kept], "the kept columns keep their order"
    at = ok(hangar, "runtimes", "list", columns=columns)
    assert headers(at)[0] == "name" and "status" in headers(at)
    assert NAME in first_column(at), f"a folded name is whole:\n{at}"
    sessions = ok(hangar, "sessions", "list", columns=columns)
    assert {"session", "state"} <= set(headers(sessions)), "the essential columns are always there"
    assert runtime["sessionId"] in first_column(sessions), sessions


def first_column(table: str) -> str:
    """The first column's cells joined, so that a value folded over several lines reads whole again."""
    return "".join(line.split("│")[1].strip() for line in table.splitlines() if line.startswith("│"))


def test_a_pipe_gets_every_column(hangar: HangarServer, runtime: dict[str, Any]) -> None:
    table = ok(hangar, "sessions", "list", columns=None)
    assert headers(table)[:4] == ["runtime", "session", "version", "state"] and "ended because" in headers(table)


def test_exit_codes(hangar: HangarServer, runtime: dict[str, Any]) -> None:
    missing = cli(hangar, "runtimes", "get", "no_such_runtime")
    assert missing.returncode == 3 and "no runtime named" in missing.stderr
    gone = cli(hangar, "endpoints", "list", runtime["agentRuntimeId"][:-10] + "ABCDEFGHIJ")
    assert gone.returncode == 3, gone.stderr
    refused = cli(hangar, "endpoints", "delete", NAME, "DEFAULT")
    assert refused.returncode == 1 and refused.stderr.startswith("error: ") and "Exception" in refused.stderr
    assert cli(hangar, "runtimes", "list", "-o", "xml").returncode == 2
    assert cli(hangar, "runtimes", "list", "--endpoint-url", "http://127.0.0.1:9").returncode == 4


def test_shell_completion_script(hangar: HangarServer) -> None:
    # typer detects the shell it runs in (the nearest shell among its ancestors): run it as a child of bash. A lone
    # command would be exec'd by bash -c, leaving whatever ran pytest (make's sh, in CI) as the nearest shell.
    shown = subprocess.run(
        ["bash", "-c", f"{HANGAR_BIN} --show-completion; exit $?"], capture_output=True, text=True, timeout=60
    )
    assert shown.returncode == 0, shown.stderr
    assert "_HANGAR_COMPLETE" in shown.stdout and "complete " in shown.stdout
    env = {**os.environ, "_HANGAR_COMPLETE": "complete_bash", "COMP_WORDS": "hangar runtimes l", "COMP_CWORD": "2"}
    done = subprocess.run([str(HANGAR_BIN)], env=env, capture_output=True, text=True, timeout=60)
    assert "list" in done.stdout.split(), done.stdout + done.stderr


def test_docs_list_the_exit_codes() -> None:
    page = (Path(__file__).resolve().parents[2] / "docs" / "cli.md").read_text()
    for code in ("| 0 |", "| 1 |", "| 2 |", "| 3 |", "| 4 |", "| 5 |"):
        assert code in page
    assert "--install-completion" in page and "--output" in page and "--quiet" in page
