"""``hangar endpoints split``: Hangar's traffic split of an endpoint between two versions (operator API,
gateway/splits.py). New sessions go to a version by weight; running sessions stay on the version they started on."""

from __future__ import annotations

from pathlib import Path
from typing import Any
from urllib.parse import quote

import typer

from hangar.cli.client import DATA_DIR, ENDPOINT_URL, EXIT_USAGE, REGION, aws_errors, connect, fail
from hangar.cli.dataplane import operator_call
from hangar.cli.output import OUTPUT, Format, emit_data
from hangar.cli.resources import find_runtime


def split(
    runtime: str = typer.Argument(..., help="Runtime name, id or ARN."),
    endpoint: str = typer.Argument(..., help="Endpoint name (DEFAULT or a named one)."),
    routes: list[str] = typer.Argument(None, help="VERSION=PERCENT twice, e.g. 1=90 2=10; none: show the split."),
    clear: bool = typer.Option(False, "--clear", help="Remove the split: new sessions all go to the live version."),
    output: Format = OUTPUT,
    endpoint_url: str = ENDPOINT_URL,
    data_dir: Path | None = DATA_DIR,
    region: str | None = REGION,
) -> None:
    """Send a percentage of an endpoint's NEW sessions to a second version (Hangar-only, beyond AgentCore)."""
    hangar = connect(endpoint_url, data_dir, region)
    with aws_errors():
        found = find_runtime(hangar.client("bedrock-agentcore-control"), runtime)
    runtime_id = str(found["agentRuntimeId"]) if found else runtime
    path = f"/hangar/endpoints/{quote(runtime_id, safe='')}/{quote(endpoint, safe='')}/split"
    if clear and routes:
        fail("give VERSION=PERCENT pairs or --clear, not both", EXIT_USAGE)
    if clear:
        answer = operator_call(hangar, "DELETE", path)
    elif routes:
        answer = operator_call(hangar, "PUT", path, {"routes": [_route(text) for text in routes]})
    else:
        answer = operator_call(hangar, "GET", path)
    if output != Format.table:
        emit_data(answer, output)
        return
    shown = ", ".join(f"version {r['agentRuntimeVersion']}: {r['weight']}%" for r in answer["routes"])
    typer.echo(f"endpoint {endpoint} of {runtime_id}: {shown or 'no split (every new session: its live version)'}")


def _route(text: str) -> dict[str, Any]:
    version, sep, weight = text.partition("=")
    if not sep or not version.strip().isdigit() or not weight.strip().isdigit():
        fail(f"{text!r} is not VERSION=PERCENT (e.g. 1=90)", EXIT_USAGE)
    return {"agentRuntimeVersion": version.strip(), "weight": int(weight)}


def register(endpoints: typer.Typer) -> None:
    """Add ``split`` to the ``endpoints`` group (resources.py's)."""
    endpoints.command("split")(split)
