"""``hangar runtimes``, ``hangar versions`` and ``hangar endpoints``: the control plane, read and changed.

A RUNTIME argument is a runtime name, id or ARN. Tables for people, ``--output json|yaml`` for scripts (cli/output.py).
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import typer
from botocore.client import BaseClient
from botocore.exceptions import ClientError
from rich.progress import Progress, TaskID

from hangar.cli.client import (
    DATA_DIR,
    ENDPOINT_URL,
    EXIT_NOT_FOUND,
    EXIT_TIMEOUT,
    REGION,
    aws_errors,
    connect,
    console,
    fail,
    print_json,
)
from hangar.cli.output import JSON_ALIAS, OUTPUT, QUIET, Column, Format, chosen, emit, emit_data, field

POLL_S = 0.5
FINAL = ("READY", "CREATE_FAILED", "UPDATE_FAILED", "DELETE_FAILED")
JSON = typer.Option(False, "--json", help="Print the answer as JSON.")  # commands that change something
WAIT_TIMEOUT = typer.Option(300, "--timeout", help="Seconds to wait for a final status.")

runtimes_app = typer.Typer(help="List, show and delete agent runtimes.", no_args_is_help=True)
versions_app = typer.Typer(help="Immutable versions of a runtime.", no_args_is_help=True)
endpoints_app = typer.Typer(help="Named endpoints that point at a version of a runtime.", no_args_is_help=True)


# -- shared with deploy ------------------------------------------------------------------------------------


def find_runtime(control: BaseClient, ref: str, *, missing_ok: bool = False) -> dict[str, Any] | None:
    """The runtime summary whose name, id or ARN is ``ref``; None (or exit 1) when there is none."""
    ref_id = ref.rsplit("runtime/", 1)[-1] if ref.startswith("arn:") else ref
    with aws_errors():
        for page in control.get_paginator("list_agent_runtimes").paginate():
            runtime: dict[str, Any]
            for runtime in page.get("agentRuntimes", []):
                if ref_id in (runtime.get("agentRuntimeId"), runtime.get("agentRuntimeName")):
                    return runtime
    if missing_ok:
        return None
    fail(f"no runtime named {ref!r} (nor with that id or ARN)", EXIT_NOT_FOUND)


def wait_for_runtime(
    control: BaseClient, runtime_id: str, version: str, timeout: float, progress: Progress, task: TaskID
) -> dict[str, Any]:
    """Poll GetAgentRuntime for ``version`` until its status is final or ``timeout`` passes (then exit 1)."""
    deadline = time.monotonic() + timeout
    while True:
        with aws_errors():
            current: dict[str, Any] = control.get_agent_runtime(agentRuntimeId=runtime_id, agentRuntimeVersion=version)
        status = current.get("status", "")
        if status in FINAL:
            return current
        if time.monotonic() > deadline:
            fail(f"version {version} of {runtime_id} is still {status} after {timeout:.0f}s", EXIT_TIMEOUT)
        progress.update(task, description=f"version {version} is {status}")
        time.sleep(POLL_S)


def _wait_for_endpoint(control: BaseClient, runtime_id: str, name: str, timeout: float) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        with aws_errors():
            current: dict[str, Any] = control.get_agent_runtime_endpoint(agentRuntimeId=runtime_id, endpointName=name)
        if current.get("status") in FINAL:
            return current
        if time.monotonic() > deadline:
            fail(f"endpoint {name} is still {current.get('status')} after {timeout:.0f}s", EXIT_TIMEOUT)
        time.sleep(POLL_S)


def _control(endpoint_url: str, data_dir: Path | None, region: str | None) -> BaseClient:
    return connect(endpoint_url, data_dir, region).client("bedrock-agentcore-control")


def _runtime_id(control: BaseClient, ref: str) -> str:
    runtime = find_runtime(control, ref)
    return str(runtime["agentRuntimeId"]) if runtime else ref


def _when(value: object) -> str:
    return value.strftime("%Y-%m-%d %H:%M:%S") if hasattr(value, "strftime") else str(value or "")


# -- runtimes ----------------------------------------------------------------------------------------------


RUNTIME_COLUMNS = (
    Column("name", field("agentRuntimeName"), 0),
    Column("id", field("agentRuntimeId"), 1),
    Column("version", field("agentRuntimeVersion"), 2),
    Column("status", field("status"), 0),
    Column("updated", lambda r: _when(r.get("lastUpdatedAt")), 3),
    Column("description", field("description"), 4),
)


@runtimes_app.command("list")
def runtimes_list(
    endpoint_url: str = ENDPOINT_URL,
    data_dir: Path | None = DATA_DIR,
    region: str | None = REGION,
    output: Format = OUTPUT,
    quiet: bool = QUIET,
    as_json: bool = JSON_ALIAS,
) -> None:
    """List every runtime (ListAgentRuntimes' agentRuntimes)."""
    control = _control(endpoint_url, data_dir, region)
    with aws_errors():
        found = [r for page in control.get_paginator("list_agent_runtimes").paginate() for r in page["agentRuntimes"]]
    emit(
        found,
        RUNTIME_COLUMNS,
        output=chosen(output, as_json),
        quiet=quiet,
        ident=field("agentRuntimeArn"),
        title="Runtimes",
    )


@runtimes_app.command("get")
def runtimes_get(
    runtime: str = typer.Argument(..., help="Runtime name, id or ARN."),
    version: str | None = typer.Option(None, "--version", help="A specific version (default: the latest)."),
    endpoint_url: str = ENDPOINT_URL,
    data_dir: Path | None = DATA_DIR,
    region: str | None = REGION,
    output: Format = typer.Option(Format.json, "--output", "-o", case_sensitive=False, help="json or yaml."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="Print only the runtime's ARN."),
) -> None:
    """Show one runtime (or one version of it): GetAgentRuntime's answer."""
    control = _control(endpoint_url, data_dir, region)
    runtime_id = _runtime_id(control, runtime)
    with aws_errors():
        extra = {"agentRuntimeVersion": version} if version else {}
        answer = control.get_agent_runtime(agentRuntimeId=runtime_id, **extra)
    if quiet:
        typer.echo(answer["agentRuntimeArn"])
    else:
        emit_data(answer, output)


@runtimes_app.command("delete")
def runtimes_delete(
    runtime: str = typer.Argument(..., help="Runtime name, id or ARN."),
    version: str | None = typer.Option(None, "--version", help="Delete only this version."),
    wait: bool = typer.Option(False, "--wait", help="Wait until the runtime (or version) is gone."),
    timeout: float = WAIT_TIMEOUT,
    endpoint_url: str = ENDPOINT_URL,
    data_dir: Path | None = DATA_DIR,
    region: str | None = REGION,
) -> None:
    """Delete a runtime with its versions and endpoints, or one version of it."""
    control = _control(endpoint_url, data_dir, region)
    runtime_id = _runtime_id(control, runtime)
    extra = {"agentRuntimeVersion": version} if version else {}
    with aws_errors():
        answer = control.delete_agent_runtime(agentRuntimeId=runtime_id, **extra)
    deadline = time.monotonic() + timeout
    while wait:
        try:
            control.get_agent_runtime(agentRuntimeId=runtime_id, **extra)
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") == "ResourceNotFoundException":
                break
            raise
        if time.monotonic() > deadline:
            fail(f"{runtime_id} still exists after {timeout:.0f}s", EXIT_TIMEOUT)
        time.sleep(POLL_S)
    what = f"version {version} of {runtime_id}" if version else runtime_id
    console.print(f"{what}: {'deleted' if wait else answer.get('status', 'DELETING')}")


# -- versions ----------------------------------------------------------------------------------------------


VERSION_COLUMNS = (
    Column("version", field("agentRuntimeVersion"), 0),
    Column("status", field("status"), 0),
    Column("updated", lambda v: _when(v.get("lastUpdatedAt")), 1),
    Column("description", field("description"), 2),
)


@versions_app.command("list")
def versions_list(
    runtime: str = typer.Argument(..., help="Runtime name, id or ARN."),
    endpoint_url: str = ENDPOINT_URL,
    data_dir: Path | None = DATA_DIR,
    region: str | None = REGION,
    output: Format = OUTPUT,
    quiet: bool = QUIET,
    as_json: bool = JSON_ALIAS,
) -> None:
    """List the versions of a runtime, newest first (ListAgentRuntimeVersions' agentRuntimes)."""
    control = _control(endpoint_url, data_dir, region)
    runtime_id = _runtime_id(control, runtime)
    with aws_errors():
        pages = control.get_paginator("list_agent_runtime_versions").paginate(agentRuntimeId=runtime_id)
        found = [v for page in pages for v in page["agentRuntimes"]]
    found.sort(key=lambda v: int(v["agentRuntimeVersion"]) if str(v["agentRuntimeVersion"]).isdigit() else 0)
    found.reverse()
    emit(
        found,
        VERSION_COLUMNS,
        output=chosen(output, as_json),
        quiet=quiet,
        ident=field("agentRuntimeVersion"),
        title=f"Versions of {runtime_id}",
    )


# -- endpoints ---------------------------------------------------------------------------------------------


ENDPOINT_COLUMNS = (
    Column("name", field("name"), 0),
    Column("live version", field("liveVersion"), 0),
    Column("target version", field("targetVersion"), 2),
    Column("status", field("status"), 1),
    Column("updated", lambda e: _when(e.get("lastUpdatedAt")), 3),
    Column("description", field("description"), 4),
)


@endpoints_app.command("list")
def endpoints_list(
    runtime: str = typer.Argument(..., help="Runtime name, id or ARN."),
    endpoint_url: str = ENDPOINT_URL,
    data_dir: Path | None = DATA_DIR,
    region: str | None = REGION,
    output: Format = OUTPUT,
    quiet: bool = QUIET,
    as_json: bool = JSON_ALIAS,
) -> None:
    """List the endpoints of a runtime (ListAgentRuntimeEndpoints' runtimeEndpoints)."""
    control = _control(endpoint_url, data_dir, region)
    runtime_id = _runtime_id(control, runtime)
    with aws_errors():
        pages = control.get_paginator("list_agent_runtime_endpoints").paginate(agentRuntimeId=runtime_id)
        found = [e for page in pages for e in page["runtimeEndpoints"]]
    emit(
        found,
        ENDPOINT_COLUMNS,
        output=chosen(output, as_json),
        quiet=quiet,
        ident=field("agentRuntimeEndpointArn"),
        title=f"Endpoints of {runtime_id}",
    )


@endpoints_app.command("create")
def endpoints_create(
    runtime: str = typer.Argument(..., help="Runtime name, id or ARN."),
    name: str = typer.Argument(..., help="Endpoint name."),
    version: str | None = typer.Option(None, "--version", help="Version to serve (default: the latest)."),
    description: str | None = typer.Option(None, "--description", help="Endpoint description."),
    wait: bool = typer.Option(True, "--wait/--no-wait", help="Wait until the endpoint is READY."),
    timeout: float = WAIT_TIMEOUT,
    endpoint_url: str = ENDPOINT_URL,
    data_dir: Path | None = DATA_DIR,
    region: str | None = REGION,
    as_json: bool = JSON,
) -> None:
    """Create an endpoint that serves one version of a runtime."""
    control = _control(endpoint_url, data_dir, region)
    runtime_id = _runtime_id(control, runtime)
    extra: dict[str, str] = {}
    if version:
        extra["agentRuntimeVersion"] = version
    if description:
        extra["description"] = description
    with aws_errors():
        answer = control.create_agent_runtime_endpoint(agentRuntimeId=runtime_id, name=name, **extra)
    _finish_endpoint(control, runtime_id, name, answer, wait, timeout, as_json)


@endpoints_app.command("update")
def endpoints_update(
    runtime: str = typer.Argument(..., help="Runtime name, id or ARN."),
    name: str = typer.Argument(..., help="Endpoint name."),
    version: str = typer.Option(..., "--version", help="Version the endpoint moves to."),
    description: str | None = typer.Option(None, "--description", help="New description."),
    wait: bool = typer.Option(True, "--wait/--no-wait", help="Wait until the endpoint is READY."),
    timeout: float = WAIT_TIMEOUT,
    endpoint_url: str = ENDPOINT_URL,
    data_dir: Path | None = DATA_DIR,
    region: str | None = REGION,
    as_json: bool = JSON,
) -> None:
    """Point an endpoint at another version."""
    control = _control(endpoint_url, data_dir, region)
    runtime_id = _runtime_id(control, runtime)
    extra = {"description": description} if description else {}
    with aws_errors():
        answer = control.update_agent_runtime_endpoint(
            agentRuntimeId=runtime_id, endpointName=name, agentRuntimeVersion=version, **extra
        )
    _finish_endpoint(control, runtime_id, name, answer, wait, timeout, as_json)


@endpoints_app.command("delete")
def endpoints_delete(
    runtime: str = typer.Argument(..., help="Runtime name, id or ARN."),
    name: str = typer.Argument(..., help="Endpoint name."),
    endpoint_url: str = ENDPOINT_URL,
    data_dir: Path | None = DATA_DIR,
    region: str | None = REGION,
) -> None:
    """Delete an endpoint (DEFAULT cannot be deleted)."""
    control = _control(endpoint_url, data_dir, region)
    runtime_id = _runtime_id(control, runtime)
    with aws_errors():
        answer = control.delete_agent_runtime_endpoint(agentRuntimeId=runtime_id, endpointName=name)
    console.print(f"endpoint {name} of {runtime_id}: {answer.get('status', 'DELETING')}")


def _finish_endpoint(
    control: BaseClient, runtime_id: str, name: str, answer: dict[str, Any], wait: bool, timeout: float, as_json: bool
) -> None:
    current = _wait_for_endpoint(control, runtime_id, name, timeout) if wait else answer
    if as_json:
        print_json({k: v for k, v in current.items() if k != "ResponseMetadata"})
    else:
        live = current.get("liveVersion") or current.get("targetVersion")
        console.print(f"endpoint {name} of {runtime_id}: {current.get('status')} (version {live})")
    if str(current.get("status", "")).endswith("FAILED"):
        fail(f"endpoint {name} is {current.get('status')}: {current.get('failureReason') or 'no reason given'}")


def register(app: typer.Typer) -> None:
    """Add ``runtimes``, ``versions`` and ``endpoints`` to the root app."""
    app.add_typer(runtimes_app, name="runtimes")
    app.add_typer(versions_app, name="versions")
    app.add_typer(endpoints_app, name="endpoints")
