"""What every client command shares: where the server is, whose keys sign, a botocore client, readable errors.

Each command takes the three options below and calls ``connect(...)``::

    def list_(endpoint_url: str = ENDPOINT_URL, data_dir: Path | None = DATA_DIR, region: str | None = REGION):
        hangar = connect(endpoint_url, data_dir, region)
        with aws_errors():
            hangar.client("bedrock-agentcore-control").list_agent_runtimes()

Credentials, in order: the admin key file of ``--data-dir`` (``<data_dir>/credentials``); the standard AWS chain
(``AWS_ACCESS_KEY_ID``/``AWS_PROFILE``/``~/.aws``); ``./.hangar/credentials``, where ``hangar serve`` run in the
same folder writes it. The region and account come from the server's ``/healthz`` unless given.
"""

from __future__ import annotations

import configparser
import json
import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, NoReturn
from urllib.error import URLError
from urllib.request import urlopen

import botocore.session
import typer
from botocore.client import BaseClient
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError, EndpointConnectionError
from rich.console import Console
from rich.markup import escape

DEFAULT_ENDPOINT_URL = "http://127.0.0.1:8780"

# Exit codes (docs/cli.md): scripts branch on these. 2 is also what click uses for a bad option or argument.
EXIT_ERROR = 1  # the server answered with an error (its AWS error code is on stderr), or the operation failed
EXIT_USAGE = 2  # a bad option or argument
EXIT_NOT_FOUND = 3  # ResourceNotFoundException, or no runtime with that name, id or ARN
EXIT_UNREACHABLE = 4  # the server cannot be reached, or there are no credentials to sign with
EXIT_TIMEOUT = 5  # a wait for a final status ran out of time
DEFAULT_DATA_DIR = Path(".hangar")

console = Console(soft_wrap=True)  # long ARNs and ids stay on one line, copyable
err_console = Console(stderr=True)

ENDPOINT_URL = typer.Option(
    DEFAULT_ENDPOINT_URL, "--endpoint-url", envvar="HANGAR_ENDPOINT_URL", help="URL of the Hangar server."
)
DATA_DIR = typer.Option(
    None,
    "--data-dir",
    envvar="HANGAR_DATA_DIR",
    help="Server data dir whose admin key file (<data-dir>/credentials) signs requests.",
)
REGION = typer.Option(None, "--region", envvar="AWS_REGION", help="Region to sign for (default: the server's).")


@dataclass
class Hangar:
    """A connection to one server: endpoint, region, account and the keys that sign."""

    endpoint_url: str
    region: str
    account_id: str
    credentials: tuple[str, str] | None  # None: botocore's own credential chain
    _clients: dict[str, BaseClient] = field(default_factory=dict)

    def client(self, service: str) -> BaseClient:
        """A botocore client for ``service`` (``bedrock-agentcore-control``, ``bedrock-agentcore``, ``s3``)."""
        if service not in self._clients:
            session = botocore.session.get_session()
            extra: dict[str, Any] = {}
            if self.credentials is not None:
                extra = {"aws_access_key_id": self.credentials[0], "aws_secret_access_key": self.credentials[1]}
            config = Config(
                retries={"max_attempts": 2, "mode": "standard"},
                connect_timeout=5,
                read_timeout=300,
                s3={"addressing_style": "path"},
            )
            self._clients[service] = session.create_client(
                service, endpoint_url=self.endpoint_url, region_name=self.region, config=config, **extra
            )
        return self._clients[service]

    @property
    def role_arn(self) -> str:
        """AWS requires a roleArn; Hangar ignores it, so every runtime gets this one."""
        return f"arn:aws:iam::{self.account_id}:role/hangar-runtime"


def connect(endpoint_url: str, data_dir: Path | None = None, region: str | None = None) -> Hangar:
    """Resolve credentials and ask the server for its region and account; exit 1 with a reason when unreachable."""
    os.environ.setdefault("AWS_EC2_METADATA_DISABLED", "true")  # never wait for an instance metadata service
    endpoint_url = endpoint_url.rstrip("/")
    facts = server_facts(endpoint_url)
    return Hangar(
        endpoint_url=endpoint_url,
        region=region or str(facts.get("region") or "us-west-2"),
        account_id=str(facts.get("accountId") or "123456789012"),
        credentials=find_credentials(data_dir),
    )


def server_facts(endpoint_url: str) -> dict[str, object]:
    try:
        with urlopen(f"{endpoint_url}/healthz", timeout=10) as response:
            facts: dict[str, object] = json.loads(response.read())
            return facts
    except (URLError, OSError, ValueError) as exc:
        fail(
            f"cannot reach Hangar at {endpoint_url} ({exc}); start it with `hangar serve` or pass --endpoint-url",
            EXIT_UNREACHABLE,
        )


def find_credentials(data_dir: Path | None) -> tuple[str, str] | None:
    if data_dir is not None:
        found = read_key_file(data_dir / "credentials")
        if found is None:
            where = data_dir / "credentials"
            fail(f"no admin key in {where}; is {data_dir} the server's --data-dir?", EXIT_UNREACHABLE)
        return found
    if botocore.session.get_session().get_credentials() is not None:
        return None
    found = read_key_file(DEFAULT_DATA_DIR / "credentials")
    if found is None:
        fail(
            "no credentials: pass --data-dir (the server's), or set AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY",
            EXIT_UNREACHABLE,
        )
    return found


def read_key_file(path: Path) -> tuple[str, str] | None:
    """The ``default`` profile of an AWS shared-credentials file, as ``hangar serve`` writes it."""
    parser = configparser.ConfigParser(interpolation=None)
    try:
        parser.read_string(path.read_text())
        section = parser["default"]
        return section["aws_access_key_id"].strip(), section["aws_secret_access_key"].strip()
    except (OSError, configparser.Error, KeyError):
        return None


@contextmanager
def aws_errors() -> Iterator[None]:
    """Turn botocore failures into one readable line on stderr: exit 3 for a missing resource, 4 when the server
    cannot be reached, else 1."""
    try:
        yield
    except ClientError as exc:
        error = exc.response.get("Error", {})
        code = error.get("Code") or exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", "Error")
        fail(f"{code}: {error.get('Message') or exc}", exit_code_of(str(code)))
    except EndpointConnectionError as exc:
        fail(str(exc), EXIT_UNREACHABLE)
    except BotoCoreError as exc:
        fail(str(exc))


def exit_code_of(error_code: str) -> int:
    """The exit code for an AWS error code the server answered with."""
    return EXIT_NOT_FOUND if error_code in ("ResourceNotFoundException", "404") else EXIT_ERROR


def fail(message: str, exit_code: int = EXIT_ERROR) -> NoReturn:
    """Print ``message`` as an error and exit with ``exit_code`` (see the EXIT_ constants)."""
    err_console.print(f"[bold red]error:[/bold red] {escape(message)}", highlight=False)
    raise typer.Exit(exit_code)


def print_json(data: object) -> None:
    """Indented JSON on stdout; timestamps (botocore gives datetimes) in ISO 8601."""
    console.print_json(json.dumps(data, default=_json_value))


def _json_value(value: object) -> str:
    return value.isoformat() if isinstance(value, datetime) else str(value)
