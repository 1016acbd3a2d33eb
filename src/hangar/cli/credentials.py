"""``hangar credentials``: create, list and delete the access keys that may sign requests (operator API).

Keys are managed over HTTP like everything else (``/hangar/credentials/``, SigV4-signed with the caller's key),
so the commands work against a remote server too. A new key's secret is printed once and never again.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import botocore.session
import typer
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials
from rich.table import Table

from hangar.cli.client import (
    DATA_DIR,
    ENDPOINT_URL,
    EXIT_UNREACHABLE,
    REGION,
    Hangar,
    connect,
    console,
    exit_code_of,
    fail,
    print_json,
)

credentials_app = typer.Typer(help="Access keys that may sign requests to this server.", no_args_is_help=True)
JSON_OUTPUT = typer.Option(False, "--json", help="Print JSON instead of a table.")


def register(app: typer.Typer) -> None:
    app.add_typer(credentials_app, name="credentials")


@credentials_app.command("create")
def create(
    name: str = typer.Argument(..., help="Who or what will use the key (shown in `list`, e.g. ci or alice)."),
    output: Path | None = typer.Option(
        None, "--output", "-o", help="Also write the key as an AWS credentials file (profile default, mode 0600)."
    ),
    as_json: bool = JSON_OUTPUT,
    endpoint_url: str = ENDPOINT_URL,
    data_dir: Path | None = DATA_DIR,
    region: str | None = REGION,
) -> None:
    """Create an access key; its secret is shown only now."""
    key = _call(connect(endpoint_url, data_dir, region), "POST", "/hangar/credentials/", {"name": name})
    if output is not None:
        from hangar.auth.keyfile import write_credentials_file

        write_credentials_file(output, key["accessKeyId"], key["secretAccessKey"])
    if as_json:
        print_json(key)
        return
    console.print(f"access key id:     {key['accessKeyId']}")
    console.print(f"secret access key: {key['secretAccessKey']}")
    console.print(
        "[yellow]The secret is shown only once; store it now.[/yellow]" + (f" (written to {output})" if output else "")
    )


@credentials_app.command("list")
def list_(
    as_json: bool = JSON_OUTPUT,
    endpoint_url: str = ENDPOINT_URL,
    data_dir: Path | None = DATA_DIR,
    region: str | None = REGION,
) -> None:
    """List access keys (never their secrets)."""
    keys = _call(connect(endpoint_url, data_dir, region), "GET", "/hangar/credentials/")["credentials"]
    if as_json:
        print_json(keys)
        return
    table = Table("access key id", "name", "created", "last used")
    for key in keys:
        table.add_row(key["accessKeyId"], key["name"], key["createdAt"], key["lastUsedAt"] or "never")
    console.print(table)


@credentials_app.command("delete")
def delete(
    access_key_id: str = typer.Argument(..., help="The key to delete; requests it signs are refused at once."),
    endpoint_url: str = ENDPOINT_URL,
    data_dir: Path | None = DATA_DIR,
    region: str | None = REGION,
) -> None:
    """Delete an access key (the last remaining key cannot be deleted)."""
    _call(connect(endpoint_url, data_dir, region), "DELETE", f"/hangar/credentials/{access_key_id}/")
    console.print(f"deleted {access_key_id}")


def _call(hangar: Hangar, method: str, path: str, document: dict[str, Any] | None = None) -> dict[str, Any]:
    """One SigV4-signed JSON request to the operator API; AWS-shaped errors become one line and exit 1."""
    import httpx

    if hangar.credentials is not None:
        credentials = Credentials(*hangar.credentials)
    else:
        credentials = botocore.session.get_session().get_credentials()
    body = json.dumps(document).encode() if document is not None else b""
    headers = {"Content-Type": "application/json"} if document is not None else {}
    request = AWSRequest(method=method, url=f"{hangar.endpoint_url}{path}", data=body, headers=headers)
    SigV4Auth(credentials, "bedrock-agentcore", hangar.region).add_auth(request)
    try:
        response = httpx.request(method, request.url, headers=dict(request.headers.items()), content=body, timeout=30)
    except httpx.HTTPError as exc:
        fail(f"cannot reach Hangar at {hangar.endpoint_url}: {exc}", EXIT_UNREACHABLE)
    try:
        answer = response.json()
    except ValueError:
        answer = {"message": response.text}
    if response.status_code >= 400:
        code = response.headers.get("x-amzn-ErrorType", str(response.status_code))
        message = answer.get("message") if isinstance(answer, dict) else answer
        fail(f"{code}: {message}", exit_code_of(code))
    result: dict[str, Any] = answer
    return result
