"""``hangar identities``, ``hangar providers`` and ``hangar vault``: the identity control plane from the shell.

Secrets (API keys, client secrets) are read from a hidden prompt or, with ``--secret-stdin``, from standard input;
never from the command line, where every user of the machine could read them in the process list.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import typer
from rich.table import Table

from hangar.cli.client import DATA_DIR, ENDPOINT_URL, REGION, aws_errors, connect, console, fail, print_json
from hangar.cli.credentials import _call
from hangar.cli.output import JSON_ALIAS, OUTPUT, QUIET, Column, Format, chosen, emit, emit_data, field

identities_app = typer.Typer(help="Workload identities (every runtime has one, named by its id).", no_args_is_help=True)
providers_app = typer.Typer(help="API-key and OAuth2 credential providers of the token vault.", no_args_is_help=True)
vault_app = typer.Typer(help="The token vault's keys.", no_args_is_help=True)

JSON_OUTPUT = typer.Option(False, "--json", help="Print JSON instead of a table.")
SECRET_STDIN = typer.Option(
    False, "--secret-stdin", help="Read the secret from standard input (one line) instead of a hidden prompt."
)
CONTROL = "bedrock-agentcore-control"
# Vendors with an input structure of their own (``googleOauth2ProviderConfig``...); the rest use the included one.
OWN_STRUCTURE = {"Custom", "Google", "Github", "Slack", "Salesforce", "Microsoft", "Atlassian", "Linkedin"}


def _config_key(vendor: str) -> str:
    stem = vendor.removesuffix("Oauth2")
    return (
        f"{stem[:1].lower()}{stem[1:]}Oauth2ProviderConfig" if stem in OWN_STRUCTURE else "includedOauth2ProviderConfig"
    )


def register(app: typer.Typer) -> None:
    app.add_typer(identities_app, name="identities")
    app.add_typer(providers_app, name="providers")
    app.add_typer(vault_app, name="vault")


def read_secret(from_stdin: bool, what: str) -> str:
    """The secret from stdin (trailing newline dropped) or a hidden, confirmed prompt."""
    if from_stdin:
        value = sys.stdin.readline().rstrip("\r\n")
    else:
        value = typer.prompt(what, hide_input=True, confirmation_prompt=True)
    if not value:
        fail(f"empty {what.lower()}")
    return value


def _created(created: dict[str, Any], as_json: bool, arn_key: str) -> bool:
    """Show what a create call answered: all of it as JSON, else the new ARN; True when it showed the ARN."""
    created.pop("ResponseMetadata", None)
    if as_json:
        print_json(created)
        return False
    console.print(f"created {created[arn_key]}")
    return True


def _all_pages(client: Any, operation: str, key: str) -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = []
    kwargs: dict[str, Any] = {}
    while True:
        page = getattr(client, operation)(**kwargs)
        found += page[key]
        if not page.get("nextToken"):
            return found
        kwargs["nextToken"] = page["nextToken"]


# -- identities ------------------------------------------------------------------------------------------------


@identities_app.command("list")
def identities_list(
    output: Format = OUTPUT,
    quiet: bool = QUIET,
    as_json: bool = JSON_ALIAS,
    endpoint_url: str = ENDPOINT_URL,
    data_dir: Path | None = DATA_DIR,
    region: str | None = REGION,
) -> None:
    """List workload identities."""
    client = connect(endpoint_url, data_dir, region).client(CONTROL)
    with aws_errors():
        items = _all_pages(client, "list_workload_identities", "workloadIdentities")
    columns = (Column("name", field("name"), 0), Column("workload identity ARN", field("workloadIdentityArn"), 1))
    emit(items, columns, output=chosen(output, as_json), quiet=quiet, ident=field("workloadIdentityArn"))


@identities_app.command("create")
def identities_create(
    name: str = typer.Argument(..., help="3-255 letters, digits, '_', '.' or '-'."),
    return_url: list[str] = typer.Option(
        [], "--return-url", help="An allowed OAuth2 return URL of the user-federation flow (repeatable)."
    ),
    as_json: bool = JSON_OUTPUT,
    endpoint_url: str = ENDPOINT_URL,
    data_dir: Path | None = DATA_DIR,
    region: str | None = REGION,
) -> None:
    """Create a workload identity."""
    client = connect(endpoint_url, data_dir, region).client(CONTROL)
    with aws_errors():
        created = client.create_workload_identity(name=name, allowedResourceOauth2ReturnUrls=return_url)
    _created(created, as_json, "workloadIdentityArn")


@identities_app.command("delete")
def identities_delete(
    name: str = typer.Argument(..., help="The workload identity (a runtime's goes with its runtime instead)."),
    endpoint_url: str = ENDPOINT_URL,
    data_dir: Path | None = DATA_DIR,
    region: str | None = REGION,
) -> None:
    """Delete a workload identity."""
    client = connect(endpoint_url, data_dir, region).client(CONTROL)
    with aws_errors():
        client.delete_workload_identity(name=name)
    console.print(f"deleted {name}")


# -- providers -------------------------------------------------------------------------------------------------


@providers_app.command("create-api-key")
def providers_create_api_key(
    name: str = typer.Argument(..., help="Provider name (letters, digits, '-' and '_')."),
    secret_stdin: bool = SECRET_STDIN,
    as_json: bool = JSON_OUTPUT,
    endpoint_url: str = ENDPOINT_URL,
    data_dir: Path | None = DATA_DIR,
    region: str | None = REGION,
) -> None:
    """Store an API key in the vault as a credential provider."""
    api_key = read_secret(secret_stdin, "API key")
    client = connect(endpoint_url, data_dir, region).client(CONTROL)
    with aws_errors():
        created = client.create_api_key_credential_provider(name=name, apiKey=api_key)
    _created(created, as_json, "credentialProviderArn")


@providers_app.command("create-oauth2")
def providers_create_oauth2(
    name: str = typer.Argument(..., help="Provider name (letters, digits, '-' and '_')."),
    vendor: str = typer.Option("CustomOauth2", "--vendor", help="CustomOauth2, GoogleOauth2, GithubOauth2, ..."),
    client_id: str = typer.Option(..., "--client-id", help="The OAuth2 client id Hangar authenticates as."),
    discovery_url: str | None = typer.Option(
        None, "--discovery-url", help="CustomOauth2: the IdP's .well-known/openid-configuration URL."
    ),
    issuer: str | None = typer.Option(None, "--issuer", help="Issuer, instead of a discovery URL."),
    authorization_endpoint: str | None = typer.Option(None, "--authorization-endpoint", help="Authorization URL."),
    token_endpoint: str | None = typer.Option(None, "--token-endpoint", help="Token URL."),
    tenant_id: str | None = typer.Option(None, "--tenant-id", help="MicrosoftOauth2: the Entra tenant."),
    no_secret: bool = typer.Option(False, "--no-secret", help="A public client: store no client secret."),
    secret_stdin: bool = SECRET_STDIN,
    as_json: bool = JSON_OUTPUT,
    endpoint_url: str = ENDPOINT_URL,
    data_dir: Path | None = DATA_DIR,
    region: str | None = REGION,
) -> None:
    """Create an OAuth2 credential provider; prints the callback URL to register at the IdP."""
    config: dict[str, Any] = {"clientId": client_id}
    endpoints = {"issuer": issuer, "authorizationEndpoint": authorization_endpoint, "tokenEndpoint": token_endpoint}
    if vendor == "CustomOauth2":
        if discovery_url is not None:
            config["oauthDiscovery"] = {"discoveryUrl": discovery_url}
        elif all(endpoints.values()):
            config["oauthDiscovery"] = {"authorizationServerMetadata": {**endpoints, "responseTypes": ["code"]}}
        else:
            fail("CustomOauth2 needs --discovery-url, or --issuer, --authorization-endpoint and --token-endpoint")
    else:
        config.update({k: v for k, v in endpoints.items() if v is not None})
        if tenant_id is not None:
            config["tenantId"] = tenant_id
    if not no_secret:
        config["clientSecret"] = read_secret(secret_stdin, "Client secret")
    client = connect(endpoint_url, data_dir, region).client(CONTROL)
    with aws_errors():
        created = client.create_oauth2_credential_provider(
            name=name, credentialProviderVendor=vendor, oauth2ProviderConfigInput={_config_key(vendor): config}
        )
    if _created(created, as_json, "credentialProviderArn"):
        console.print(f"callback URL (register it at the IdP): {created['callbackUrl']}")


@providers_app.command("list")
def providers_list(
    output: Format = OUTPUT,
    quiet: bool = QUIET,
    as_json: bool = JSON_ALIAS,
    endpoint_url: str = ENDPOINT_URL,
    data_dir: Path | None = DATA_DIR,
    region: str | None = REGION,
) -> None:
    """List API-key and OAuth2 credential providers (never their secrets)."""
    client = connect(endpoint_url, data_dir, region).client(CONTROL)
    with aws_errors():
        api_keys = _all_pages(client, "list_api_key_credential_providers", "credentialProviders")
        oauth2 = _all_pages(client, "list_oauth2_credential_providers", "credentialProviders")
    items = [{"kind": "api-key", **p} for p in api_keys] + [{"kind": "oauth2", **p} for p in oauth2]
    columns = (
        Column("name", field("name"), 0),
        Column("kind", field("kind"), 1),
        Column("vendor", field("credentialProviderVendor"), 2),
        Column("ARN", field("credentialProviderArn"), 3),
    )
    emit(items, columns, output=chosen(output, as_json), quiet=quiet, ident=field("credentialProviderArn"))


@providers_app.command("delete")
def providers_delete(
    name: str = typer.Argument(..., help="The provider to delete."),
    kind: str = typer.Option("auto", "--kind", help="api-key, oauth2, or auto (whichever has the name)."),
    endpoint_url: str = ENDPOINT_URL,
    data_dir: Path | None = DATA_DIR,
    region: str | None = REGION,
) -> None:
    """Delete a credential provider and its sealed secret."""
    from botocore.exceptions import ClientError

    if kind not in ("auto", "api-key", "oauth2"):
        fail("--kind must be api-key, oauth2 or auto")
    client = connect(endpoint_url, data_dir, region).client(CONTROL)
    operations = {
        "api-key": client.delete_api_key_credential_provider,
        "oauth2": client.delete_oauth2_credential_provider,
    }
    kinds = list(operations) if kind == "auto" else [kind]
    with aws_errors():
        for index, each in enumerate(kinds):
            try:
                operations[each](name=name)
            except ClientError as exc:
                missing = exc.response.get("Error", {}).get("Code") == "ResourceNotFoundException"
                if missing and index < len(kinds) - 1:
                    continue
                raise
            console.print(f"deleted {each} provider {name}")
            return


# -- vault -----------------------------------------------------------------------------------------------------


@vault_app.command("rotate")
def vault_rotate(
    as_json: bool = JSON_OUTPUT,
    endpoint_url: str = ENDPOINT_URL,
    data_dir: Path | None = DATA_DIR,
    region: str | None = REGION,
) -> None:
    """Rotate the vault key: a new key, every secret re-sealed under it, the old keys retired."""
    report = _call(connect(endpoint_url, data_dir, region), "POST", "/hangar/identity/rotate-vault-key")
    if as_json:
        print_json(report)
        return
    console.print(f"current key {report['currentKeyId']}; re-sealed {report['rewritten']} secret(s)")
    if report["retiredKeyIds"]:
        console.print(f"retired {', '.join(report['retiredKeyIds'])}")
    if report.get("unreadable"):
        console.print(f"[yellow]{report['unreadable']} stored value(s) fail their integrity check; their keys stay[/]")


@vault_app.command("status")
def vault_status(
    output: Format = OUTPUT,
    as_json: bool = JSON_ALIAS,
    endpoint_url: str = ENDPOINT_URL,
    data_dir: Path | None = DATA_DIR,
    region: str | None = REGION,
) -> None:
    """The vault's keys (ids, never material) and how many secrets each seals."""
    status = _call(connect(endpoint_url, data_dir, region), "GET", "/hangar/identity/vault")
    if chosen(output, as_json) != Format.table:
        emit_data(status, chosen(output, as_json))
        return
    table = Table("key id", "created", "current", "secrets")
    for key in status["keys"]:
        table.add_row(key["keyId"], key["createdAt"], "yes" if key["current"] else "", str(key["secrets"]))
    console.print(table)
