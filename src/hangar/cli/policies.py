"""``hangar policies put|get|delete``: resource-based policies of a runtime or one of its endpoints
(PutResourcePolicy, GetResourcePolicy, DeleteResourcePolicy; they decide which sessions may call it)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import typer

from hangar.cli.client import DATA_DIR, ENDPOINT_URL, EXIT_USAGE, REGION, Hangar, aws_errors, connect, fail
from hangar.cli.resources import find_runtime

policies_app = typer.Typer(help="Resource-based policies: which sessions may call a runtime.", no_args_is_help=True)
ENDPOINT = typer.Option(None, "--endpoint", help="An endpoint of the runtime (its policy), e.g. DEFAULT.")


def _arn(hangar: Hangar, runtime: str, endpoint: str | None) -> str:
    found = find_runtime(hangar.client("bedrock-agentcore-control"), runtime)
    arn = str(found["agentRuntimeArn"]) if found else runtime
    return f"{arn}/runtime-endpoint/{endpoint}" if endpoint else arn


@policies_app.command("put")
def put(
    runtime: str = typer.Argument(..., help="Runtime name, id or ARN."),
    policy: str = typer.Argument(..., help="The policy document: a file, or - for standard input."),
    endpoint: str | None = ENDPOINT,
    endpoint_url: str = ENDPOINT_URL,
    data_dir: Path | None = DATA_DIR,
    region: str | None = REGION,
) -> None:
    """Attach (or replace) the policy; the server refuses what it would not evaluate exactly."""
    text = sys.stdin.read() if policy == "-" else _read(Path(policy))
    hangar = connect(endpoint_url, data_dir, region)
    arn = _arn(hangar, runtime, endpoint)
    with aws_errors():
        hangar.client("bedrock-agentcore-control").put_resource_policy(resourceArn=arn, policy=text)
    typer.echo(arn)


@policies_app.command("get")
def get(
    runtime: str = typer.Argument(..., help="Runtime name, id or ARN."),
    endpoint: str | None = ENDPOINT,
    endpoint_url: str = ENDPOINT_URL,
    data_dir: Path | None = DATA_DIR,
    region: str | None = REGION,
) -> None:
    """Print the policy (indented JSON); exit 3 when there is none."""
    hangar = connect(endpoint_url, data_dir, region)
    arn = _arn(hangar, runtime, endpoint)
    with aws_errors():
        text = hangar.client("bedrock-agentcore-control").get_resource_policy(resourceArn=arn)["policy"]
    typer.echo(json.dumps(json.loads(text), indent=2))


@policies_app.command("delete")
def delete(
    runtime: str = typer.Argument(..., help="Runtime name, id or ARN."),
    endpoint: str | None = ENDPOINT,
    endpoint_url: str = ENDPOINT_URL,
    data_dir: Path | None = DATA_DIR,
    region: str | None = REGION,
) -> None:
    """Remove the policy: sessions may no longer call the runtime (default deny)."""
    hangar = connect(endpoint_url, data_dir, region)
    arn = _arn(hangar, runtime, endpoint)
    with aws_errors():
        hangar.client("bedrock-agentcore-control").delete_resource_policy(resourceArn=arn)
    typer.echo(arn)


def _read(path: Path) -> str:
    try:
        return path.read_text()
    except OSError as exc:
        fail(f"cannot read {path}: {exc.strerror}", EXIT_USAGE)


def register(app: typer.Typer) -> None:
    app.add_typer(policies_app, name="policies")
