"""Entry point of the ``hangar`` command: one module per command group, registered here."""

from __future__ import annotations

import typer

from hangar.cli import credentials, dataplane, deploy, identity, images, logs, nodes, policies, resources, shell, split
from hangar.cli.node import node
from hangar.cli.serve import serve

app = typer.Typer(
    name="hangar",
    help="Hangar: deploy and run AI agents in isolated per-session sandboxes, AgentCore-compatible.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)


@app.callback()
def main() -> None:
    """Hangar: deploy and run AI agents in isolated per-session sandboxes, AgentCore-compatible."""


app.command("serve")(serve)
app.command("node")(node)  # a sandbox host of a multi-node Hangar (cluster extra)
deploy.register(app)  # deploy, upload
resources.register(app)  # runtimes, versions, endpoints
nodes.register(app)  # nodes list | drain (a cluster's sandbox hosts)
credentials.register(app)  # credentials
dataplane.register(app)  # invoke, sessions, exec
identity.register(app)  # identities, providers, vault
images.register(app)  # images list, delete
shell.register(app)  # shell
logs.register(app)  # logs
split.register(resources.endpoints_app)  # endpoints split
policies.register(app)  # policies put, get, delete

if __name__ == "__main__":  # pragma: no cover
    app()
