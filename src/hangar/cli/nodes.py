"""``hangar nodes``: the sandbox hosts of a cluster (``hangar serve --cluster``), through the operator API.

In one process (no ``--cluster``) the listing shows that process as node ``local``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any
from urllib.parse import quote

import typer

from hangar.cli.client import DATA_DIR, ENDPOINT_URL, REGION, connect
from hangar.cli.dataplane import operator_call
from hangar.cli.output import JSON_ALIAS, OUTPUT, QUIET, Column, Format, chosen, emit, emit_data, field

nodes_app = typer.Typer(help="Nodes of a cluster: list them, drain one (operator API).", no_args_is_help=True)


def _state(node: dict[str, Any]) -> str:
    if not node.get("healthy", True):
        return "unhealthy"
    return "draining" if node.get("draining") else "ready"


def _memory(node: dict[str, Any]) -> str:
    value = node.get("memoryBytes")
    return f"{value / 1048576:.0f} MiB" if isinstance(value, int) else "-"


NODE_COLUMNS = (
    Column("name", field("name"), 0),
    Column("state", _state, 0),
    Column("sessions", lambda n: f"{n.get('sessions', 0)}/{n.get('capacity', '-')}", 0),
    Column("free memory", _memory, 2),
    Column("templates", lambda n: len(n.get("templates") or []), 3),
    Column("address", field("address"), 1),
)


@nodes_app.command("list")
def nodes_list(
    output: Format = OUTPUT,
    quiet: bool = QUIET,
    as_json: bool = JSON_ALIAS,
    endpoint_url: str = ENDPOINT_URL,
    data_dir: Path | None = DATA_DIR,
    region: str | None = REGION,
) -> None:
    """List the nodes: state (ready, draining, unhealthy), sessions/slots, free memory, warm templates, address."""
    hangar = connect(endpoint_url, data_dir, region)
    nodes = operator_call(hangar, "GET", "/hangar/nodes/")["nodes"]
    emit(nodes, NODE_COLUMNS, output=chosen(output, as_json), quiet=quiet, ident=field("name"))


@nodes_app.command("drain")
def nodes_drain(
    name: str = typer.Argument(..., help="The node (as `hangar nodes list` names it)."),
    output: Format = OUTPUT,
    endpoint_url: str = ENDPOINT_URL,
    data_dir: Path | None = DATA_DIR,
    region: str | None = REGION,
) -> None:
    """Take no new session on a node; its live sessions keep being served until they end."""
    hangar = connect(endpoint_url, data_dir, region)
    answer = operator_call(hangar, "POST", f"/hangar/nodes/{quote(name, safe='')}/drain")
    if output != Format.table:
        emit_data(answer, output)
        return
    typer.echo(f"node {name} is draining: no new sessions are placed on it")


def register(app: typer.Typer) -> None:
    app.add_typer(nodes_app, name="nodes")
