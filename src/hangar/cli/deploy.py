"""``hangar deploy`` and ``hangar upload``: zip a folder, put it in the artifact store, create or update a runtime.

The zip is deterministic (sorted names, fixed timestamps), so an unchanged folder gives identical bytes, the same
object key, and on the server the same content hash: nothing is uploaded or built twice.
"""

from __future__ import annotations

import hashlib
import os
import stat
import tempfile
import time
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pathspec
import typer
from botocore.exceptions import ClientError
from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

from hangar.cli import images
from hangar.cli.client import (
    DATA_DIR,
    ENDPOINT_URL,
    EXIT_USAGE,
    REGION,
    Hangar,
    aws_errors,
    connect,
    console,
    fail,
    print_json,
)
from hangar.cli.resources import find_runtime, wait_for_runtime

DEFAULT_BUCKET = "hangar-artifacts"
MAX_ZIP_BYTES = 250 * 1000 * 1000  # the artifact store's limit, checked here before uploading
# Never part of an agent's code, whatever the ignore files say.
DEFAULT_EXCLUDES = (
    ".git/",
    ".hg/",
    ".svn/",
    "__pycache__/",
    "*.py[cod]",
    ".venv/",
    "venv/",
    ".hangar/",
    ".mypy_cache/",
    ".pytest_cache/",
    ".ruff_cache/",
    ".tox/",
    "*.egg-info/",
    ".DS_Store",
)
IGNORE_FILES = (".gitignore", ".hangarignore")
ZIP_DATE = (1980, 1, 1, 0, 0, 0)
RUNTIMES = ("PYTHON_3_10", "PYTHON_3_11", "PYTHON_3_12", "PYTHON_3_13", "PYTHON_3_14", "NODE_22")


@dataclass(frozen=True)
class Package:
    path: Path
    files: int
    size: int
    sha256: str
    names: frozenset[str]


def package_folder(folder: Path, out: Path) -> Package:
    """Zip ``folder`` into ``out`` minus the excluded paths; links inside the folder stay links."""
    if not folder.is_dir():
        fail(f"{folder} is not a folder")
    spec = pathspec.GitIgnoreSpec.from_lines(list(DEFAULT_EXCLUDES) + _ignore_lines(folder))
    root = folder.resolve()
    names: list[str] = []
    with zipfile.ZipFile(out, "w", compression=zipfile.ZIP_DEFLATED, compresslevel=6) as archive:
        for relative, path in _walk(folder, spec):
            info = zipfile.ZipInfo(relative, date_time=ZIP_DATE)
            mode = path.lstat().st_mode
            info.create_system = 3
            if stat.S_ISLNK(mode):
                target = os.readlink(path)
                if os.path.commonpath([root, os.path.realpath(path)]) != str(root):
                    fail(f"{path} is a symbolic link to {target}, outside {folder}; copy the file in instead")
                info.external_attr = (stat.S_IFLNK | 0o777) << 16
                archive.writestr(info, target)
            else:
                info.external_attr = (stat.S_IFREG | (0o755 if mode & 0o100 else 0o644)) << 16
                info.compress_type = zipfile.ZIP_DEFLATED
                with path.open("rb") as source, archive.open(info, "w") as sink:
                    while chunk := source.read(1024 * 1024):
                        sink.write(chunk)
            names.append(relative)
    size = out.stat().st_size
    if size > MAX_ZIP_BYTES:
        fail(f"{folder} zips to {size / 1e6:.1f} MB; the limit is 250 MB (exclude files with .hangarignore)")
    digest = hashlib.sha256()
    with out.open("rb") as handle:
        while chunk := handle.read(1024 * 1024):
            digest.update(chunk)
    return Package(out, len(names), size, digest.hexdigest(), frozenset(names))


def _ignore_lines(folder: Path) -> list[str]:
    lines: list[str] = []
    for name in IGNORE_FILES:
        path = folder / name
        if path.is_file():
            lines += path.read_text(errors="replace").splitlines()
    return lines


def _walk(folder: Path, spec: pathspec.PathSpec) -> list[tuple[str, Path]]:
    """(relative name, path) of every file and link not excluded, sorted; excluded folders are not entered."""
    found: list[tuple[str, Path]] = []
    for dirpath, dirnames, filenames in os.walk(folder):
        base = Path(dirpath).relative_to(folder).as_posix()
        prefix = "" if base == "." else base + "/"
        kept = []
        for name in sorted(dirnames):
            path = Path(dirpath) / name
            if spec.match_file(prefix + name + "/"):
                continue
            if path.is_symlink():
                found.append((prefix + name, path))  # a link to a folder: kept as a link, never followed
            else:
                kept.append(name)
        dirnames[:] = kept
        for name in filenames:
            if not spec.match_file(prefix + name):
                found.append((prefix + name, Path(dirpath) / name))
    return sorted(found)


def parse_s3_uri(uri: str) -> tuple[str, str]:
    if not uri.startswith("s3://") or "/" not in uri[5:] or uri.endswith("/"):
        fail(f"{uri!r} is not an object URI like s3://bucket/key.zip")
    bucket, key = uri[5:].split("/", 1)
    return bucket, key


def upload_file(hangar: Hangar, path: Path, bucket: str, key: str, sha256: str | None = None) -> str:
    """Put ``path`` at ``s3://bucket/key`` (creating the bucket when missing); returns the version id.

    When the object already holds these bytes (its ETag is their sha256 prefix), nothing is sent.
    """
    s3 = hangar.client("s3")
    with aws_errors():
        try:
            s3.create_bucket(Bucket=bucket)
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") != "BucketAlreadyOwnedByYou":
                raise
        if sha256 is not None:
            try:
                head = s3.head_object(Bucket=bucket, Key=key)
            except ClientError as exc:
                if exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode") != 404:
                    raise
            else:
                if head.get("ETag", "").strip('"') == sha256[:32]:
                    return str(head.get("VersionId") or sha256[:32])
        with path.open("rb") as body:
            answer = s3.put_object(Bucket=bucket, Key=key, Body=body)
    return str(answer.get("VersionId", ""))


def upload(
    path: Path = typer.Argument(..., help="A file to upload as it is, or a folder to zip first."),
    destination: str = typer.Argument(..., help="s3://bucket/key of the artifact store."),
    endpoint_url: str = ENDPOINT_URL,
    data_dir: Path | None = DATA_DIR,
    region: str | None = REGION,
    as_json: bool = typer.Option(False, "--json", help="Print the result as JSON."),
) -> None:
    """Upload a file, or a folder as a zip (ignore files respected), to Hangar's artifact store."""
    bucket, key = parse_s3_uri(destination)
    hangar = connect(endpoint_url, data_dir, region)
    with tempfile.TemporaryDirectory(prefix="hangar-upload-") as scratch:
        if path.is_dir():
            package = package_folder(path, Path(scratch) / "artifact.zip")
            source, size, files = package.path, package.size, package.files
        elif path.is_file():
            source, size, files = path, path.stat().st_size, 1
        else:
            fail(f"{path} does not exist")
        with _progress() as progress:
            progress.add_task(f"uploading {size / 1e6:.2f} MB to {destination}")
            version_id = upload_file(hangar, source, bucket, key)
    result = {"uri": destination, "bytes": size, "files": files, "versionId": version_id}
    if as_json:
        print_json(result)
    else:
        console.print(f"uploaded {destination} ({size} bytes, {files} files), versionId {version_id}")


def deploy(
    path: Path | None = typer.Argument(
        None, help="Folder holding the agent's code (main.py, requirements.txt ...) or a Dockerfile."
    ),
    name: str = typer.Option(..., "--name", help="Runtime name; updated when it exists, created otherwise."),
    entry: str = typer.Option(
        "main.py", "--entry", help="Entry point, e.g. main.py or 'opentelemetry-instrument main.py'."
    ),
    runtime: str = typer.Option("PYTHON_3_11", "--runtime", help=f"One of {', '.join(RUNTIMES)}."),
    bucket: str = typer.Option(DEFAULT_BUCKET, "--bucket", help="Artifact-store bucket to upload the zip to."),
    env: list[str] = typer.Option([], "--env", help="Environment variable K=V for the agent (repeatable)."),
    protocol: str | None = typer.Option(
        None, "--protocol", help="HTTP, MCP, A2A or AGUI (default HTTP; updates keep it)."
    ),
    idle_timeout: int | None = typer.Option(None, "--idle-timeout", help="Idle session timeout, seconds."),
    max_lifetime: int | None = typer.Option(None, "--max-lifetime", help="Maximum session lifetime, seconds."),
    description: str | None = typer.Option(None, "--description", help="Runtime description."),
    timeout: float = typer.Option(900, "--timeout", help="Seconds to wait for READY."),
    image: str | None = typer.Option(
        None, "--image", help="Deploy this container image (a containerUri, e.g. ACCT.dkr.ecr.REGION...:TAG)."
    ),
    endpoint_url: str = ENDPOINT_URL,
    data_dir: Path | None = DATA_DIR,
    region: str | None = REGION,
    as_json: bool = typer.Option(False, "--json", help="Print the result as JSON."),
) -> None:
    """Zip PATH, upload it, create or update runtime NAME, and wait until the new version is READY. A PATH with a
    Dockerfile is built with docker, podman or buildah and pushed to Hangar's registry; --image deploys an image."""
    if path is None and image is None:
        fail("give a folder to deploy (code or a Dockerfile), or --image REF", EXIT_USAGE)
    entry_point = entry.split()
    if not 1 <= len(entry_point) <= 2:
        fail("--entry takes one or two words, e.g. main.py or 'opentelemetry-instrument main.py'", EXIT_USAGE)
    if runtime not in RUNTIMES:
        fail(f"--runtime must be one of {', '.join(RUNTIMES)}", EXIT_USAGE)
    variables = _parse_env(env)
    hangar = connect(endpoint_url, data_dir, region)
    control = hangar.client("bedrock-agentcore-control")
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="hangar-deploy-") as scratch, _progress() as progress:
        task = progress.add_task(f"packaging {path}" if image is None else f"deploying {image}")
        if image is not None:
            artifact, source = images.image_artifact(image), image
        elif path is not None and (path / "Dockerfile").is_file():
            source = images.build_and_push(hangar, path, name.lower(), progress, task)
            artifact = images.image_artifact(source)
        else:
            assert path is not None
            package = package_folder(path, Path(scratch) / "artifact.zip")
            script = next((part for part in entry_point if part.endswith(".py")), entry_point[-1])
            if "/".join(part for part in script.split("/") if part not in ("", ".")) not in package.names:
                fail(f"entry point {script} is not in {path} (or it is excluded by an ignore file)")
            key = f"{name}/{package.sha256[:16]}.zip"
            progress.update(task, description=f"uploading {package.files} files, {package.size / 1e6:.2f} MB")
            version_id = upload_file(hangar, package.path, bucket, key, package.sha256)
            location = {"bucket": bucket, "prefix": key, **({"versionId": version_id} if version_id else {})}
            artifact = {"codeConfiguration": {"code": {"s3": location}, "runtime": runtime, "entryPoint": entry_point}}
            source = f"s3://{bucket}/{key}"
        existing = find_runtime(control, name, missing_ok=True)
        progress.update(task, description=f"{'updating' if existing else 'creating'} runtime {name}")
        settings = Flags(variables, protocol, idle_timeout, max_lifetime, description)
        answer = _create_or_update(hangar, name, existing, artifact, settings)
        runtime_id, version = answer["agentRuntimeId"], str(answer["agentRuntimeVersion"])
        phase = "pulling and unpacking the image for" if "containerConfiguration" in artifact else "building"
        progress.update(task, description=f"{phase} version {version} of {name}")
        final = wait_for_runtime(control, runtime_id, version, timeout, progress, task)
    result = {
        "agentRuntimeArn": answer["agentRuntimeArn"],
        "agentRuntimeId": runtime_id,
        "agentRuntimeVersion": version,
        "status": final.get("status"),
        "artifact": source,
        "seconds": round(time.monotonic() - started, 2),
    }
    if final.get("status") != "READY":
        result["failureReason"] = final.get("failureReason", "")
        if as_json:
            print_json(result)
        fail(f"version {version} of {name} is {final.get('status')}: {final.get('failureReason') or 'no reason given'}")
    if as_json:
        print_json(result)
        return
    console.print(f"[green]✓[/green] {name} version {version} is READY ({result['seconds']}s)")
    console.print(f"  arn: {answer['agentRuntimeArn']}", highlight=False)


@dataclass(frozen=True)
class Flags:
    """Runtime settings given on the command line; None means "keep the current one" (or the default)."""

    variables: dict[str, str] | None
    protocol: str | None
    idle_timeout: int | None
    max_lifetime: int | None
    description: str | None


def _create_or_update(
    hangar: Hangar, name: str, existing: dict[str, Any] | None, artifact: dict[str, Any], flags: Flags
) -> dict[str, Any]:
    """UpdateAgentRuntime keeps what flags do not mention (authorizer, headers, network) from the current version."""
    control = hangar.client("bedrock-agentcore-control")
    request: dict[str, object] = {"agentRuntimeArtifact": artifact, "roleArn": hangar.role_arn}
    if existing is not None:
        with aws_errors():
            current = control.get_agent_runtime(agentRuntimeId=existing["agentRuntimeId"])
        for field in (
            "description",
            "networkConfiguration",
            "authorizerConfiguration",
            "requestHeaderConfiguration",
            "protocolConfiguration",
            "lifecycleConfiguration",
            "environmentVariables",
        ):
            if current.get(field):
                request[field] = current[field]
    request.setdefault("networkConfiguration", {"networkMode": "PUBLIC"})
    if flags.protocol is not None:
        request["protocolConfiguration"] = {"serverProtocol": flags.protocol.upper()}
    lifecycle: dict[str, Any] = dict(request.get("lifecycleConfiguration") or {})  # type: ignore[call-overload]  # a JSON object
    if flags.idle_timeout is not None:
        lifecycle["idleRuntimeSessionTimeout"] = flags.idle_timeout
    if flags.max_lifetime is not None:
        lifecycle["maxLifetime"] = flags.max_lifetime
    if lifecycle:
        request["lifecycleConfiguration"] = lifecycle
    if flags.variables is not None:
        request["environmentVariables"] = flags.variables
    if flags.description is not None:
        request["description"] = flags.description
    with aws_errors():
        answer: dict[str, Any]
        if existing is None:
            answer = control.create_agent_runtime(agentRuntimeName=name, **request)
        else:
            answer = control.update_agent_runtime(agentRuntimeId=existing["agentRuntimeId"], **request)
        return answer


def _parse_env(pairs: list[str]) -> dict[str, str] | None:
    """None when no --env was given (an update then keeps the current variables)."""
    if not pairs:
        return None
    variables: dict[str, str] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            fail(f"--env {pair!r} is not KEY=VALUE", EXIT_USAGE)
        variables[key] = value
    return variables


def _progress() -> Progress:
    return Progress(
        SpinnerColumn(), TextColumn("{task.description}"), TimeElapsedColumn(), console=console, transient=True
    )


def register(app: typer.Typer) -> None:
    """Add ``deploy`` and ``upload`` to the root app."""
    app.command("deploy")(deploy)
    app.command("upload")(upload)
