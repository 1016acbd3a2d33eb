"""``hangar node``: a sandbox host of a multi-node Hangar (docs/cluster.md)."""

from __future__ import annotations

import asyncio
import logging
import socket
from pathlib import Path
from typing import Any

import typer


def node(
    data_dir: Path = typer.Option(..., "--data-dir", help="This node's own state directory (sandboxes, versions)."),
    listen: str = typer.Option("127.0.0.1:8790", "--listen", help="HOST:PORT of the node API gateways call."),
    database_url: str = typer.Option(..., "--database-url", help="The gateways' shared store (PostgreSQL URL)."),
    gateway: str = typer.Option(..., "--gateway", help="A gateway's URL: artifacts come from its S3 API."),
    name: str = typer.Option(None, "--name", help="Node name in the cluster (default: the host name)."),
    slots: int = typer.Option(None, "--slots", help="Session slots of this node (default: max_sessions)."),
    sandbox_backend: str = typer.Option(None, "--sandbox", help="Sandbox backend, as for hangar serve."),
    log_level: str = typer.Option(None, "--log-level", help="debug, info, warning or error."),
) -> None:
    """Join the Ray cluster at RAY_ADDRESS as a sandbox host and serve the node API (needs the cluster extra)."""
    from rich.console import Console
    from rich.markup import escape

    from hangar.config import Settings

    console = Console(stderr=True, soft_wrap=True)
    host, _, port_text = listen.rpartition(":")
    if not host or not port_text.isdigit():
        console.print("[bold red]hangar node[/bold red]: --listen must be HOST:PORT")
        raise typer.Exit(code=2)
    overrides: dict[str, Any] = {
        "data_dir": data_dir,
        "database_url": database_url,
        "max_sessions": slots,
        "sandbox_backend": sandbox_backend,
        "log_level": log_level,
    }
    settings = Settings(**{k: v for k, v in overrides.items() if v is not None})
    logging.basicConfig(level=settings.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    from hangar.cluster.node import build_node, run
    from hangar.cluster.ray_link import ClusterUnavailableError, ray_module
    from hangar.sandbox.selection import NO_ISOLATION_WARNING, SandboxUnavailableError, preflight

    try:
        ray_module()
        preflight(settings)  # the same fail-closed check as hangar serve: isolate or refuse
        built = build_node(settings, name=name or socket.gethostname(), host=host, port=int(port_text), gateway=gateway)
    except (SandboxUnavailableError, ClusterUnavailableError) as exc:
        console.print(f"[bold red]hangar node: refusing to start[/bold red]: {escape(str(exc))}", highlight=False)
        raise typer.Exit(code=2) from None
    if settings.sandbox_backend == "process":
        console.print(f"[bold red]WARNING[/bold red]: {escape(NO_ISOLATION_WARNING)}", highlight=False)
    console.print(f"[bold]Hangar node[/bold] {built.name} on {built.address}  (data dir {settings.data_dir.resolve()})")
    try:
        asyncio.run(run(built))
    except ClusterUnavailableError as exc:
        console.print(f"[bold red]hangar node[/bold red]: {escape(str(exc))}", highlight=False)
        raise typer.Exit(code=2) from None
