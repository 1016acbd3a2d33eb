"""``hangar invoke``, ``hangar exec`` and ``hangar sessions``: the data plane from the command line.

Runtimes are named by name, id or ARN (a name is looked up with ListAgentRuntimes). ``invoke`` and ``exec`` go
through the AWS wire API like boto3 would; ``sessions`` uses Hangar's operator API (SigV4-signed as well).
"""

from __future__ import annotations

import json
import shlex
import sys
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import quote

import botocore.session
import typer
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials
from botocore.exceptions import EventStreamError
from rich.table import Table

from hangar.cli.client import (
    DATA_DIR,
    ENDPOINT_URL,
    EXIT_NOT_FOUND,
    EXIT_UNREACHABLE,
    REGION,
    Hangar,
    aws_errors,
    connect,
    console,
    exit_code_of,
    fail,
    print_json,
)
from hangar.cli.output import JSON_ALIAS, OUTPUT, QUIET, Column, Format, chosen, emit, emit_data, field
from hangar.cli.resources import find_runtime

SESSION_ID = typer.Option(None, "--session-id", "-s", help="Runtime session id (33-256 chars) [default: a new one].")
QUALIFIER = typer.Option("DEFAULT", "--qualifier", "-q", help="Endpoint to invoke.")

sessions_app = typer.Typer(help="Live sessions of this installation (operator API).", no_args_is_help=True)


def register(app: typer.Typer) -> None:
    app.command("invoke")(invoke)
    app.command("exec")(exec_)
    app.add_typer(sessions_app, name="sessions")


def runtime_arn(hangar: Hangar, ref: str) -> str:
    """An ARN as is; a runtime id or name → its ARN (ListAgentRuntimes)."""
    if ref.startswith("arn:"):
        return ref
    runtime = find_runtime(hangar.client("bedrock-agentcore-control"), ref, missing_ok=True)
    if runtime is None:
        fail(f"no agent runtime named {ref!r}; see `hangar runtimes list`", EXIT_NOT_FOUND)
    return str(runtime["agentRuntimeArn"])


def _payload(value: str) -> bytes:
    """``-`` reads stdin, ``@path`` reads a file, anything else is the payload itself."""
    if value == "-":
        return sys.stdin.buffer.read()
    if value.startswith("@"):
        try:
            return Path(value[1:]).read_bytes()
        except OSError as exc:
            fail(f"cannot read payload file {value[1:]}: {exc}")
    return value.encode()


def invoke(
    runtime: str = typer.Argument(..., help="Runtime name, id or ARN."),
    payload: str = typer.Argument(..., help="Payload: JSON text, @file, or - for stdin."),
    session_id: str | None = SESSION_ID,
    qualifier: str = QUALIFIER,
    stream: bool = typer.Option(False, "--stream", help="Print the answer chunk by chunk as it arrives."),
    content_type: str = typer.Option("application/json", "--content-type", help="Content-Type of the payload."),
    endpoint_url: str = ENDPOINT_URL,
    data_dir: Path | None = DATA_DIR,
    region: str | None = REGION,
) -> None:
    """Invoke an agent (InvokeAgentRuntime); the session id is printed on stderr so you can continue it."""
    hangar = connect(endpoint_url, data_dir, region)
    body = _payload(payload)
    with aws_errors():
        arn = runtime_arn(hangar, runtime)
        response = hangar.client("bedrock-agentcore").invoke_agent_runtime(
            agentRuntimeArn=arn,
            qualifier=qualifier,
            runtimeSessionId=session_id or str(uuid.uuid4()),
            payload=body,
            contentType=content_type,
        )
        typer.echo(f"session: {response['runtimeSessionId']}", err=True)
        out = sys.stdout.buffer
        if stream:
            for chunk in response["response"].iter_chunks():
                out.write(chunk)
                out.flush()
            return
        data = response["response"].read()
    if response.get("contentType", "").startswith("application/json"):
        try:
            print_json(json.loads(data))
            return
        except ValueError:
            pass
    out.write(data)
    out.flush()


def exec_(
    runtime: str = typer.Argument(..., help="Runtime name, id or ARN."),
    command: list[str] = typer.Argument(..., help="The command (after --); one argument is run as a shell line."),
    session_id: str = typer.Option(..., "--session-id", "-s", help="Session to run the command in."),
    qualifier: str = QUALIFIER,
    timeout: int = typer.Option(300, "--timeout", help="Seconds before the command is killed."),
    endpoint_url: str = ENDPOINT_URL,
    data_dir: Path | None = DATA_DIR,
    region: str | None = REGION,
) -> None:
    """Run a command inside a session's sandbox (InvokeAgentRuntimeCommand); exits with the command's status."""
    hangar = connect(endpoint_url, data_dir, region)
    line = command[0] if len(command) == 1 else shlex.join(command)
    exit_code = 0
    with aws_errors():
        response = hangar.client("bedrock-agentcore").invoke_agent_runtime_command(
            agentRuntimeArn=runtime_arn(hangar, runtime),
            qualifier=qualifier,
            runtimeSessionId=session_id,
            body={"command": line, "timeout": timeout},
        )
        try:
            for event in response["stream"]:
                chunk = event.get("chunk", {})
                delta = chunk.get("contentDelta", {})
                if "stdout" in delta:
                    sys.stdout.write(delta["stdout"])
                    sys.stdout.flush()
                if "stderr" in delta:
                    sys.stderr.write(delta["stderr"])
                    sys.stderr.flush()
                if "contentStop" in chunk:
                    stop = chunk["contentStop"]
                    if stop.get("status") == "TIMED_OUT":
                        typer.echo(f"command timed out after {timeout}s", err=True)
                    exit_code = int(stop.get("exitCode") or 0) or (124 if stop.get("status") == "TIMED_OUT" else 0)
        except EventStreamError as exc:
            fail(f"{exc.response['Error'].get('Code')}: {exc.response['Error'].get('Message')}")
    raise typer.Exit(exit_code)


def operator_call(hangar: Hangar, method: str, path: str, body: object = None) -> Any:
    """A SigV4-signed call to Hangar's operator API (``body``: sent as JSON); returns the decoded JSON answer,
    exits 1 on an error (3 when not found)."""
    import httpx

    if hangar.credentials is not None:
        credentials = Credentials(*hangar.credentials)
    else:
        credentials = botocore.session.get_session().get_credentials()
    data = b"" if body is None else json.dumps(body).encode()
    request = AWSRequest(method=method, url=f"{hangar.endpoint_url}{path}", data=data)
    if body is not None:
        request.headers["Content-Type"] = "application/json"
    SigV4Auth(credentials, "bedrock-agentcore", hangar.region).add_auth(request)
    try:
        response = httpx.request(
            method, request.url, headers=dict(request.headers.items()), content=data or None, timeout=30
        )
    except httpx.HTTPError as exc:
        fail(f"cannot reach Hangar at {hangar.endpoint_url}: {exc}", EXIT_UNREACHABLE)
    try:
        answer = response.json()
    except ValueError:
        answer = {"message": response.text}
    if response.status_code >= 400:
        code = response.headers.get("x-amzn-ErrorType", str(response.status_code)).split(":")[0]
        fail(f"{code}: {answer.get('message') if isinstance(answer, dict) else answer}", exit_code_of(code))
    return answer


def _when(stamp: object) -> str:
    if not isinstance(stamp, int | float):
        return "-"
    return datetime.fromtimestamp(stamp, UTC).strftime("%H:%M:%S")


def _age(entry: dict[str, Any]) -> str:
    end = entry.get("endedAt") or datetime.now(UTC).timestamp()
    seconds = int(end - entry.get("startedAt", end))
    if seconds >= 3600:
        return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"
    return f"{seconds // 60}m{seconds % 60:02d}s"


def _storage(session: dict[str, Any]) -> str:
    """Persistent session storage in use (of its cap), or "-" when the runtime has none."""
    used, cap = session.get("storageBytes"), session.get("storageCapBytes")
    if not isinstance(used, int):
        return "-"
    return f"{used / 1048576:.0f}/{cap / 1048576:.0f} MiB" if isinstance(cap, int) else f"{used / 1048576:.0f} MiB"


SESSION_COLUMNS = (
    Column("runtime", field("runtimeId"), 1),
    Column("session", field("runtimeSessionId"), 0),
    Column("version", lambda s: s.get("agentRuntimeVersion", "-"), 2),
    Column("state", field("state"), 0),
    Column("start", lambda s: s.get("startKind", "-"), 5),
    Column("age", _age, 3),
    Column("last activity", lambda s: _when(s.get("lastActivityAt")), 6),
    Column(
        "memory", lambda s: f"{s['memoryBytes'] / 1048576:.0f} MiB" if isinstance(s.get("memoryBytes"), int) else "-", 4
    ),
    Column("storage", _storage, 7),
    Column("node", lambda s: s.get("node") or "-", 5),  # the cluster node serving it ("local" in one process)
    Column("ended because", lambda s: s.get("endReason") or "", 8),
)


@sessions_app.command("list")
def sessions_list(
    all_: bool = typer.Option(False, "--all", "-a", help="Include recently Terminated sessions."),
    output: Format = OUTPUT,
    quiet: bool = QUIET,
    as_json: bool = JSON_ALIAS,
    endpoint_url: str = ENDPOINT_URL,
    data_dir: Path | None = DATA_DIR,
    region: str | None = REGION,
) -> None:
    """List sessions: state, runtime, version, age, last activity, memory, persistent storage used."""
    hangar = connect(endpoint_url, data_dir, region)
    body = operator_call(hangar, "GET", "/hangar/sessions/")
    sessions = [s for s in body["sessions"] if all_ or s["state"] != "Terminated"]
    emit(sessions, SESSION_COLUMNS, output=chosen(output, as_json), quiet=quiet, ident=field("runtimeSessionId"))


@sessions_app.command("templates")
def sessions_templates(
    output: Format = OUTPUT,
    as_json: bool = JSON_ALIAS,
    endpoint_url: str = ENDPOINT_URL,
    data_dir: Path | None = DATA_DIR,
    region: str | None = REGION,
) -> None:
    """Warm templates per served version (new sessions fork from them), and why sessions started cold."""
    hangar = connect(endpoint_url, data_dir, region)
    templates = operator_call(hangar, "GET", "/hangar/sessions/").get("templates", {})
    if chosen(output, as_json) != Format.table:
        emit_data(templates, chosen(output, as_json))
        return
    if not templates.get("enabled"):
        console.print("warm templates are off (HANGAR_TEMPLATES=false, or a backend that cannot fork)")
        return
    table = Table("runtime/version", "state", "forks", "zygote pid", "restarts", "why not usable")
    for version, entry in sorted(templates.get("versions", {}).items()):
        template = entry.get("template") or {}
        state = "ready" if template.get("alive") else "starting" if entry.get("starting") else "not running"
        why = entry.get("unsafeReason") or entry.get("lastFailure") or template.get("unsafeReason") or ""
        table.add_row(
            version,
            "unusable" if entry.get("unsafeReason") else state,
            str(template.get("forks", 0)),
            str(template.get("zygotePid") or "-"),
            str(entry.get("restarts", 0)),
            str(why),
        )
    console.print(table)
    for reason, count in sorted(templates.get("coldFallbacks", {}).items()):
        console.print(f"cold starts because {reason}: {count}")


@sessions_app.command("stop")
def sessions_stop(
    runtime: str = typer.Argument(..., help="Runtime name, id or ARN."),
    session_id: str = typer.Argument(..., help="The session to stop."),
    endpoint_url: str = ENDPOINT_URL,
    data_dir: Path | None = DATA_DIR,
    region: str | None = REGION,
) -> None:
    """Stop a session now: its sandbox ends; the next invoke with that id starts a fresh one."""
    hangar = connect(endpoint_url, data_dir, region)
    with aws_errors():
        arn = runtime_arn(hangar, runtime)
    runtime_id = arn.rsplit("/", 1)[-1]
    operator_call(hangar, "DELETE", f"/hangar/sessions/{quote(runtime_id, safe='')}/{quote(session_id, safe='')}/")
    typer.echo(f"stopped session {session_id} of {runtime_id}")
