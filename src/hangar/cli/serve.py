"""``hangar serve``: one process serving the control plane, the data plane and the console."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import typer


def serve(
    host: str = typer.Option(None, help="Bind address [env HANGAR_HOST, default 127.0.0.1]."),
    port: int = typer.Option(None, help="TCP port [env HANGAR_PORT, default 8780]."),
    data_dir: Path = typer.Option(None, "--data-dir", help="State directory [env HANGAR_DATA_DIR, default ./.hangar]."),
    region: str = typer.Option(None, help="Region to answer as [env HANGAR_REGION, default us-west-2]."),
    account_id: str = typer.Option(None, "--account-id", help="12-digit account id [env HANGAR_ACCOUNT_ID]."),
    sandbox_backend: str = typer.Option(
        None,
        "--sandbox",
        help="Sandbox backend: auto (isolate or refuse to start), namespace, gvisor, process (NO isolation).",
    ),
    warm_pool_size: int = typer.Option(None, "--warm-pool", help="Ready sandboxes kept per runtime."),
    templates: bool = typer.Option(
        None, "--templates/--no-templates", help="Fork new sessions from warm templates [env HANGAR_TEMPLATES]."
    ),
    log_level: str = typer.Option(None, "--log-level", help="debug, info, warning or error."),
    cluster: bool = typer.Option(
        None, "--cluster", help="Gateway of a cluster: place sessions on the `hangar node`s of RAY_ADDRESS."
    ),
) -> None:
    """Start Hangar on embedded defaults (SQLite and artifacts under the data dir)."""
    # Imported here so that every other `hangar` command starts without loading the server's dependencies.
    import uvicorn
    from rich.console import Console
    from rich.markup import escape

    from hangar.config import Settings

    console = Console(stderr=True, soft_wrap=True)
    overrides: dict[str, Any] = {  # Settings validates each value; the flags only override what they set
        "host": host,
        "port": port,
        "data_dir": data_dir,
        "region": region,
        "account_id": account_id,
        "sandbox_backend": sandbox_backend,
        "warm_pool_size": warm_pool_size,
        "templates": templates,
        "log_level": log_level,
        "cluster": cluster,
    }
    settings = Settings(**{k: v for k, v in overrides.items() if v is not None})
    logging.basicConfig(level=settings.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    # Alembic narrates every plugin and migration at INFO; only its warnings belong in Hangar's log.
    logging.getLogger("alembic").setLevel(logging.WARNING)
    from hangar.gateway.app import create_app
    from hangar.gateway.http_protocol import GatewayHttpProtocol
    from hangar.sandbox.selection import NO_ISOLATION_WARNING, SandboxUnavailableError, preflight

    try:
        if not settings.cluster:  # a cluster's gateway runs no sandbox: its nodes do
            preflight(settings)  # before anything is created: refuse early, with the fix
        app = create_app(settings)
    except SandboxUnavailableError as exc:
        console.print(f"[bold red]hangar serve: refusing to start[/bold red]: {escape(str(exc))}", highlight=False)
        raise typer.Exit(code=2) from None
    if settings.sandbox_backend == "process":
        console.print(f"[bold red]WARNING[/bold red]: {escape(NO_ISOLATION_WARNING)}", highlight=False)
    base = f"http://{settings.host}:{settings.port}"
    console.print(f"[bold]Hangar[/bold] on {base}  (region {settings.region}, account {settings.account_id})")
    console.print(f"data dir: {settings.data_dir.resolve()}")
    if settings.credentials_file.exists():
        console.print(
            "admin credentials: "
            f"AWS_SHARED_CREDENTIALS_FILE={settings.credentials_file.resolve()}  (profile default)\n"
            f"  e.g. aws bedrock-agentcore-control list-agent-runtimes --endpoint-url {base} "
            f"--region {settings.region}"
        )
    uvicorn.run(
        app,
        host=settings.host,
        port=settings.port,
        log_level=settings.log_level.lower(),
        access_log=False,
        lifespan="on",
        timeout_graceful_shutdown=10,
        http=GatewayHttpProtocol,  # uvicorn's httptools protocol, an answer's head and body in one send
    )
