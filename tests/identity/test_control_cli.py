"""The identity control plane from the shell: the real aws CLI v1 and ``hangar identities|providers|vault``.

Secrets go to ``hangar`` on stdin or a hidden prompt only: no option of its commands takes one."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

from tests.support.server import HangarServer

BIN = Path(sys.executable).parent


def aws(server: HangarServer, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    env.update(
        AWS_SHARED_CREDENTIALS_FILE=str(server.credentials_file),
        AWS_CONFIG_FILE=os.devnull,
        AWS_EC2_METADATA_DISABLED="true",
    )
    command = [
        str(BIN / "aws"),
        "bedrock-agentcore-control",
        *args,
        "--endpoint-url",
        server.url,
        "--region",
        "us-west-2",
    ]
    return subprocess.run(command, capture_output=True, text=True, env=env, timeout=120)


def hangar_cli(
    server: HangarServer, *args: str, stdin: str | None = None, ok: bool = True
) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "HANGAR_"))}
    command = [str(BIN / "hangar"), *args, "--endpoint-url", server.url, "--data-dir", str(server.data_dir)]
    result = subprocess.run(command, input=stdin, capture_output=True, text=True, env=env, timeout=120)
    if ok:
        assert result.returncode == 0, result.stdout + result.stderr
    return result


def as_json(result: subprocess.CompletedProcess[str]) -> Any:
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout) if result.stdout.strip() else {}


def test_aws_cli_identity_operations(hangar: HangarServer) -> None:
    created = as_json(aws(hangar, "create-workload-identity", "--name", "cli-wl"))
    assert created["workloadIdentityArn"].endswith("/workload-identity/cli-wl")
    got = as_json(aws(hangar, "get-workload-identity", "--name", "cli-wl"))
    assert isinstance(got["createdTime"], (int, float))  # epoch seconds on the wire, printed as sent
    assert "cli-wl" in {w["name"] for w in as_json(aws(hangar, "list-workload-identities"))["workloadIdentities"]}

    provider = as_json(aws(hangar, "create-api-key-credential-provider", "--name", "cli-key", "--api-key", "k-123"))
    assert provider["credentialProviderArn"].endswith(":token-vault/default/apikeycredentialprovider/cli-key")
    shown = as_json(aws(hangar, "get-api-key-credential-provider", "--name", "cli-key"))
    assert "k-123" not in json.dumps(shown)
    config = {"githubOauth2ProviderConfig": {"clientId": "gh-client", "clientSecret": "gh-secret"}}
    oauth = as_json(
        aws(
            hangar,
            "create-oauth2-credential-provider",
            "--name",
            "cli-gh",
            "--credential-provider-vendor",
            "GithubOauth2",
            "--oauth2-provider-config-input",
            json.dumps(config),
        )
    )
    assert oauth["callbackUrl"] == f"{hangar.url}/identities/oauth2/callback/cli-gh"
    assert as_json(aws(hangar, "get-token-vault"))["tokenVaultId"] == "default"

    missing = aws(hangar, "get-oauth2-credential-provider", "--name", "cli-nobody")
    assert missing.returncode != 0 and "ResourceNotFoundException" in missing.stderr
    for args in (
        ("delete-oauth2-credential-provider", "--name", "cli-gh"),
        ("delete-api-key-credential-provider", "--name", "cli-key"),
        ("delete-workload-identity", "--name", "cli-wl"),
    ):
        assert aws(hangar, *args).returncode == 0


def test_hangar_identities(hangar: HangarServer) -> None:
    created = as_json(
        hangar_cli(hangar, "identities", "create", "hangar-wl", "--return-url", "https://a.example/cb", "--json")
    )
    assert created["allowedResourceOauth2ReturnUrls"] == ["https://a.example/cb"]
    listed = as_json(hangar_cli(hangar, "identities", "list", "--json"))
    assert "hangar-wl" in {w["name"] for w in listed}
    assert "hangar-wl" in hangar_cli(hangar, "identities", "list").stdout
    hangar_cli(hangar, "identities", "delete", "hangar-wl")
    again = hangar_cli(hangar, "identities", "delete", "hangar-wl", ok=False)
    assert again.returncode == 3 and "ResourceNotFoundException" in again.stderr  # docs/cli.md: 3 = not found


def test_hangar_providers_read_secrets_from_stdin_only(hangar: HangarServer, metadata_host: str) -> None:
    api_key = "stdin-api-key-0123456789"
    created = as_json(
        hangar_cli(
            hangar, "providers", "create-api-key", "hangar-key", "--secret-stdin", "--json", stdin=api_key + "\n"
        )
    )
    assert created["name"] == "hangar-key"
    oauth = hangar_cli(
        hangar,
        "providers",
        "create-oauth2",
        "hangar-oauth",
        "--client-id",
        "c1",
        "--discovery-url",
        f"{metadata_host}/.well-known/openid-configuration",
        "--secret-stdin",
        stdin="client-secret-value\n",
    )
    assert f"{hangar.url}/identities/oauth2/callback/hangar-oauth" in oauth.stdout
    listed = as_json(hangar_cli(hangar, "providers", "list", "--json"))
    kinds = {p["name"]: p["kind"] for p in listed}
    assert kinds.get("hangar-key") == "api-key" and kinds.get("hangar-oauth") == "oauth2"
    assert api_key not in json.dumps(listed)

    empty = hangar_cli(hangar, "providers", "create-api-key", "hangar-empty", "--secret-stdin", stdin="\n", ok=False)
    assert empty.returncode == 1 and "empty" in empty.stderr
    prompted = hangar_cli(
        hangar, "providers", "create-api-key", "hangar-prompted", stdin="typed-secret\ntyped-secret\n"
    )
    assert "apikeycredentialprovider/hangar-prompted" in prompted.stdout and "typed-secret" not in prompted.stdout

    hangar_cli(hangar, "providers", "delete", "hangar-oauth")  # auto: found among the OAuth2 providers
    hangar_cli(hangar, "providers", "delete", "hangar-key", "--kind", "api-key")
    gone = hangar_cli(hangar, "providers", "delete", "hangar-key", ok=False)
    assert gone.returncode == 3 and "ResourceNotFoundException" in gone.stderr


def test_hangar_vault_rotate_and_status(hangar: HangarServer) -> None:
    hangar_cli(hangar, "providers", "create-api-key", "vault-cli-key", "--secret-stdin", stdin="v\n")
    before = as_json(hangar_cli(hangar, "vault", "status", "--json"))
    report = as_json(hangar_cli(hangar, "vault", "rotate", "--json"))
    assert report["currentKeyId"] != before["currentKeyId"] and before["currentKeyId"] in report["retiredKeyIds"]
    after = as_json(hangar_cli(hangar, "vault", "status", "--json"))
    assert [k["keyId"] for k in after["keys"]] == [report["currentKeyId"]] and after["keys"][0]["secrets"] >= 1
    assert "re-sealed" in hangar_cli(hangar, "vault", "rotate").stdout


def test_no_hangar_option_takes_a_secret() -> None:
    import typer

    from hangar.cli.main import app

    root: Any = typer.main.get_command(app)
    for group in ("providers", "identities", "vault"):
        for name, command in root.commands[group].commands.items():
            for param in command.params:
                for option in param.opts:
                    assert not any(word in option for word in ("secret", "api-key", "password")) or getattr(
                        param, "is_flag", False
                    ), f"hangar {group} {name} takes {option} on the command line"
