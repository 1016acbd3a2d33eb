"""The real ``hangar`` binary against a real ``hangar serve``: packaging, upload, deploy, and the resource commands."""

from __future__ import annotations

import hashlib
import io
import json
import os
import subprocess
import zipfile
from pathlib import Path
from typing import Any

import pytest

from tests.support.server import HANGAR_BIN, HangarServer

AGENT = """\
import os

import six
from hangar.sdk import BedrockAgentCoreApp

app = BedrockAgentCoreApp()


@app.entrypoint
def invoke(payload):
    return {"echo": payload, "six": six.__version__, "greeting": os.environ.get("GREETING")}


if __name__ == "__main__":
    app.run()
"""


def hangar_cli(server: HangarServer, *args: str, ok: bool = True) -> subprocess.CompletedProcess[str]:
    env = {key: value for key, value in os.environ.items() if not key.startswith(("AWS_", "HANGAR_"))}
    env.update(HANGAR_ENDPOINT_URL=server.url, HANGAR_DATA_DIR=str(server.data_dir), COLUMNS="200")
    result = subprocess.run([str(HANGAR_BIN), *args], env=env, capture_output=True, text=True, timeout=600)
    if ok:
        assert result.returncode == 0, f"hangar {' '.join(args)} failed:\n{result.stdout}\n{result.stderr}"
    return result


def as_json(result: subprocess.CompletedProcess[str]) -> Any:
    return json.loads(result.stdout)


def write(root: Path, files: dict[str, str]) -> Path:
    for name, text in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(text)
    return root


def test_upload_zips_a_folder_without_ignored_files(hangar: HangarServer, tmp_path: Path) -> None:
    folder = write(
        tmp_path / "agent",
        {
            "main.py": AGENT,
            "pkg/util.py": "X = 1\n",
            "build/out.txt": "generated",
            "notes/secret.env": "TOKEN=1",
            "pkg/__pycache__/util.cpython-311.pyc": "",
            ".git/HEAD": "ref: refs/heads/main",
            ".venv/bin/python": "",
            ".gitignore": "build/\n",
            ".hangarignore": "*.env\n",
        },
    )
    os.symlink("pkg", folder / "pkg_link")
    first = as_json(hangar_cli(hangar, "upload", str(folder), "s3://cli-artifacts/agent.zip", "--json"))
    again = as_json(hangar_cli(hangar, "upload", str(folder), "s3://cli-artifacts/agent.zip", "--json"))
    assert first["versionId"] == again["versionId"], "the same folder must zip to the same bytes"

    s3 = hangar.boto3_client("s3", s3={"addressing_style": "path"})
    body = s3.get_object(Bucket="cli-artifacts", Key="agent.zip")["Body"].read()
    with zipfile.ZipFile(io.BytesIO(body)) as archive:
        names = sorted(archive.namelist())
        link = archive.getinfo("pkg_link")
        assert (link.external_attr >> 16) & 0o170000 == 0o120000 and archive.read(link) == b"pkg"
    assert names == [".gitignore", ".hangarignore", "main.py", "pkg/util.py", "pkg_link"]


def test_upload_of_a_single_file(hangar: HangarServer, tmp_path: Path) -> None:
    path = tmp_path / "bundle.zip"
    path.write_bytes(b"PK\x05\x06" + b"\0" * 18)  # an empty zip
    result = as_json(hangar_cli(hangar, "upload", str(path), "s3://cli-artifacts/prebuilt/bundle.zip", "--json"))
    assert result == {
        "uri": "s3://cli-artifacts/prebuilt/bundle.zip",
        "bytes": 22,
        "files": 1,
        "versionId": hashlib.sha256(path.read_bytes()).hexdigest()[:32],
    }


def test_deploy_update_versions_endpoints_delete(hangar: HangarServer, tmp_path: Path) -> None:
    folder = write(tmp_path / "echo", {"main.py": AGENT, "requirements.txt": "six==1.17.0\n"})
    created = as_json(hangar_cli(hangar, "deploy", str(folder), "--name", "cli_echo", "--env", "GREETING=hi", "--json"))
    assert created["status"] == "READY" and created["agentRuntimeVersion"] == "1"
    assert created["agentRuntimeArn"].endswith(f":runtime/{created['agentRuntimeId']}")
    # The built environment runs in a sandbox: requirements installed, hangar.sdk importable, variables passed.
    data_plane = hangar.boto3_client("bedrock-agentcore", read_timeout=120)
    answer = data_plane.invoke_agent_runtime(
        agentRuntimeArn=created["agentRuntimeArn"], runtimeSessionId="cli-deploy-" + "0" * 40, payload=b'{"n": 1}'
    )
    assert json.loads(answer["response"].read()) == {"echo": {"n": 1}, "six": "1.17.0", "greeting": "hi"}

    (folder / "main.py").write_text(AGENT + "# v2\n")
    updated = as_json(hangar_cli(hangar, "deploy", str(folder), "--name", "cli_echo", "--json"))
    assert updated["agentRuntimeId"] == created["agentRuntimeId"] and updated["agentRuntimeVersion"] == "2"
    detail = as_json(hangar_cli(hangar, "runtimes", "get", "cli_echo"))
    assert detail["environmentVariables"] == {"GREETING": "hi"}, "an update without --env keeps the variables"
    assert detail["agentRuntimeArtifact"]["codeConfiguration"]["code"]["s3"]["prefix"].startswith("cli_echo/")

    listed = as_json(hangar_cli(hangar, "runtimes", "list", "--json"))
    assert "cli_echo" in [runtime["agentRuntimeName"] for runtime in listed]
    versions = as_json(hangar_cli(hangar, "versions", "list", "cli_echo", "--json"))
    assert [v["agentRuntimeVersion"] for v in versions] == ["2", "1"]
    assert "cli_echo" in hangar_cli(hangar, "runtimes", "list").stdout

    endpoint = as_json(hangar_cli(hangar, "endpoints", "create", "cli_echo", "prod", "--version", "1", "--json"))
    assert endpoint["status"] == "READY" and endpoint["liveVersion"] == "1"
    moved = as_json(hangar_cli(hangar, "endpoints", "update", "cli_echo", "prod", "--version", "2", "--json"))
    assert moved["liveVersion"] == "2"
    names = [e["name"] for e in as_json(hangar_cli(hangar, "endpoints", "list", "cli_echo", "--json"))]
    assert sorted(names) == ["DEFAULT", "prod"]
    hangar_cli(hangar, "endpoints", "delete", "cli_echo", "prod")

    hangar_cli(hangar, "runtimes", "delete", "cli_echo", "--wait")
    remaining = as_json(hangar_cli(hangar, "runtimes", "list", "--json"))
    assert "cli_echo" not in [runtime["agentRuntimeName"] for runtime in remaining]


def test_failed_build_prints_its_reason_and_exits_1(hangar: HangarServer, tmp_path: Path) -> None:
    folder = write(tmp_path / "broken", {"main.py": AGENT, "requirements.txt": "hangar-no-such-package-zq9==1.0\n"})
    result = hangar_cli(hangar, "deploy", str(folder), "--name", "cli_broken", ok=False)
    assert result.returncode == 1
    assert "CREATE_FAILED" in result.stderr and "hangar-no-such-package-zq9" in result.stderr


@pytest.mark.parametrize(
    ("args", "message", "code"),  # exit codes: docs/cli.md
    [
        (("runtimes", "get", "no_such_runtime"), "no runtime named 'no_such_runtime'", 3),
        (("deploy", "{folder}", "--name", "x_agent", "--entry", "app.py"), "entry point app.py is not in", 1),
        (("upload", "{folder}", "not-an-s3-uri"), "is not an object URI like s3://bucket/key.zip", 1),
        (("runtimes", "list", "--endpoint-url", "http://127.0.0.1:9"), "cannot reach Hangar at http://127.0.0.1:9", 4),
    ],
)
def test_errors_are_one_readable_line(
    hangar: HangarServer, tmp_path: Path, args: tuple[str, ...], message: str, code: int
) -> None:
    folder = write(tmp_path / "agent", {"main.py": AGENT})
    result = hangar_cli(hangar, *(arg.replace("{folder}", str(folder)) for arg in args), ok=False)
    assert result.returncode == code
    assert message in " ".join(result.stderr.split()), result.stderr
    assert "Traceback" not in result.stderr
