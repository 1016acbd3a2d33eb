"""``hangar node``: a sandbox host of a multi-node Hangar (docs/cluster.md)."""

from __future__ import annotations

import asyncio
import logging
import socket
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

import typer

if TYPE_CHECKING:
    from hangar.cluster.node import Node
    from hangar.services import Services


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
        built.components += identity_components(built, gateway)
    except (SandboxUnavailableError, ClusterUnavailableError, RuntimeError) as exc:
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


def identity_components(built: Node, gateway: str) -> list[Any]:
    """The identity data plane and the sandboxes' identity channel (docs/cluster.md, "Workload identity on nodes"):
    the gateway's channel over a ``NodeIdentity``, with calls to runtimes refused. RuntimeError: a shared key is
    missing or wrong."""
    from hangar.cluster.node_identity import build_node_identity
    from hangar.gateway.identity_channel import IdentityChannel

    manager = built.state.manager
    # OAuth2 callbacks (the redirect_uri registered at the IdP) are the gateways': HANGAR_PUBLIC_URL, else --gateway
    settings = built.settings.model_copy(update={"public_url": built.settings.public_url or gateway})
    identity = build_node_identity(settings, built.engine, manager)
    if identity is None:
        return []
    if manager.identities.socket_dir is None:  # the process backend gives sandboxes no channel
        return [identity]
    services = cast("Services", identity)  # the channel reads only settings, sessions and identity_data
    return [identity, IdentityChannel(services, manager.identities, manager.identities.socket_dir, agent_calls=False)]
