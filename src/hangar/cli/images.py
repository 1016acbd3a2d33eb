"""Container images from the command line: ``hangar deploy`` of a Dockerfile folder or ``--image REF``, and
``hangar images list|delete`` (the ECR API Hangar serves, through botocore's ``ecr`` client).

A Dockerfile folder is built with whichever builder the machine has (docker when its daemon answers, else podman,
else buildah), tagged ``<account>.dkr.ecr.<region>.amazonaws.com/<name>:<timestamp>`` and pushed to Hangar's own
registry (the server's host and port, ``/v2/``) with the builder's own push and the password from
GetAuthorizationToken; the runtime's ``containerUri`` is the ECR-style name, which Hangar resolves to itself.
"""

from __future__ import annotations

import base64
import shutil
import subprocess
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import typer
from botocore.exceptions import ClientError
from rich.progress import Progress, TaskID

from hangar.cli.client import DATA_DIR, ENDPOINT_URL, REGION, Hangar, aws_errors, connect, console, fail
from hangar.cli.output import JSON_ALIAS, OUTPUT, QUIET, Column, Format, chosen, emit, field

BUILDERS = ("docker", "podman", "buildah")
BUILD_TIMEOUT_S = 3600


def ecr_host(hangar: Hangar) -> str:
    """The registry name the quick start uses; Hangar resolves it to its own registry."""
    return f"{hangar.account_id}.dkr.ecr.{hangar.region}.amazonaws.com"


def registry_address(hangar: Hangar) -> tuple[str, bool]:
    """host:port of Hangar's registry (the server's own port) and whether it speaks TLS."""
    parts = urlsplit(hangar.endpoint_url)
    return parts.netloc, parts.scheme == "https"


def registry_password(hangar: Hangar) -> str:
    """GetAuthorizationToken's password (the token is base64 of ``AWS:password``)."""
    with aws_errors():
        answer = hangar.client("ecr").get_authorization_token()
    token = base64.b64decode(answer["authorizationData"][0]["authorizationToken"]).decode()
    user, _, password = token.partition(":")
    if user != "AWS" or not password:
        fail("the registry's authorization token is not AWS:<password>")
    return password


def ensure_repository(hangar: Hangar, name: str) -> None:
    with aws_errors():
        try:
            hangar.client("ecr").create_repository(repositoryName=name)
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") != "RepositoryAlreadyExistsException":
                raise


def find_builder() -> str:
    """docker when its daemon answers, else podman, else buildah (whichever is on PATH)."""
    for name in BUILDERS:
        path = shutil.which(name)
        if path is None:
            continue
        if name == "docker":
            probe = subprocess.run([path, "info"], capture_output=True, timeout=20, check=False)
            if probe.returncode != 0:
                continue  # a client without a daemon
        return name
    fail("no image builder found: install docker (with its daemon), podman or buildah (`apt-get install buildah`)")


def _run(argv: Sequence[str], what: str, stdin: str | None = None) -> None:
    done = subprocess.run(list(argv), input=stdin, capture_output=True, text=True, timeout=BUILD_TIMEOUT_S, check=False)
    if done.returncode != 0:
        output = (done.stderr or done.stdout).strip()[-2000:]
        fail(f"{what} failed ({argv[0]} exit {done.returncode}): {output}")


def build_and_push(
    hangar: Hangar, folder: Path, repository: str, progress: Progress, task: TaskID, builder: str | None = None
) -> str:
    """Build ``folder``'s Dockerfile, push it to Hangar's registry; returns the ECR-style containerUri."""
    if not (folder / "Dockerfile").is_file():
        fail(f"{folder} has no Dockerfile")
    builder = builder or find_builder()
    tag = time.strftime("%Y%m%d%H%M%S", time.gmtime())
    uri = f"{ecr_host(hangar)}/{repository}:{tag}"
    address, tls = registry_address(hangar)
    pushed = f"{address}/{repository}:{tag}"
    progress.update(task, description=f"building {folder} with {builder}")
    local = pushed if builder == "docker" else uri
    _run([builder, "build", "-t", local, "-f", str(folder / "Dockerfile"), str(folder)], f"{builder} build")
    progress.update(task, description=f"creating repository {repository}")
    ensure_repository(hangar, repository)
    password = registry_password(hangar)
    progress.update(task, description=f"pushing {repository}:{tag} to {address}")
    if builder == "docker":
        _run([builder, "login", "--username", "AWS", "--password-stdin", address], "docker login", password)
        _run([builder, "push", pushed], "docker push")
    else:
        verify = "--tls-verify=true" if tls else "--tls-verify=false"
        _run([builder, "push", verify, "--creds", f"AWS:{password}", uri, f"docker://{pushed}"], f"{builder} push")
    return uri


def image_artifact(uri: str) -> dict[str, Any]:
    return {"containerConfiguration": {"containerUri": uri}}


def _repository_of(ref: str) -> tuple[str, dict[str, str] | None]:
    """``repo``, ``repo:tag`` or ``repo@sha256:...`` as (repository, imageId or None)."""
    if "@" in ref:
        name, digest = ref.split("@", 1)
        return name, {"imageDigest": digest}
    name, sep, tag = ref.rpartition(":")
    if sep and "/" not in tag:
        return name, {"imageTag": tag}
    return ref, None


def list_images(
    repository: str | None = typer.Argument(None, help="A repository; all repositories when omitted."),
    endpoint_url: str = ENDPOINT_URL,
    data_dir: Path | None = DATA_DIR,
    region: str | None = REGION,
    output: Format = OUTPUT,
    quiet: bool = QUIET,
    as_json: bool = JSON_ALIAS,
) -> None:
    """List the images in Hangar's registry (repository, tags, digest, size, pushed at)."""
    hangar = connect(endpoint_url, data_dir, region)
    ecr = hangar.client("ecr")
    rows: list[dict[str, Any]] = []
    with aws_errors():
        if repository is None:
            names = [
                r["repositoryName"]
                for page in ecr.get_paginator("describe_repositories").paginate()
                for r in page.get("repositories", [])
            ]
        else:
            names = [repository]
        for name in names:
            for page in ecr.get_paginator("describe_images").paginate(repositoryName=name):
                rows += page.get("imageDetails", [])
    columns = (
        Column("repository", field("repositoryName"), 0),
        Column("tags", lambda row: ",".join(row.get("imageTags", [])) or "-", 0),
        Column("digest", lambda row: str(row.get("imageDigest", ""))[:19], 2),
        Column("size", lambda row: f"{row.get('imageSizeInBytes', 0) / 1e6:.1f} MB", 1),
        Column("pushed at", field("imagePushedAt"), 3),
    )
    ident = lambda row: f"{row.get('repositoryName')}@{row.get('imageDigest')}"  # noqa: E731 - one use
    emit(rows, columns, output=chosen(output, as_json), quiet=quiet, ident=ident)


def delete_images(
    ref: str = typer.Argument(..., help="repo:tag or repo@sha256:... to delete one image; repo with --all."),
    everything: bool = typer.Option(False, "--all", help="Delete the whole repository and its images."),
    endpoint_url: str = ENDPOINT_URL,
    data_dir: Path | None = DATA_DIR,
    region: str | None = REGION,
) -> None:
    """Delete an image by tag or digest (BatchDeleteImage), or a whole repository with --all."""
    hangar = connect(endpoint_url, data_dir, region)
    ecr = hangar.client("ecr")
    repository, image_id = _repository_of(ref)
    with aws_errors():
        if everything:
            if image_id is not None:
                fail("--all deletes a repository: give its name without a tag or digest")
            ecr.delete_repository(repositoryName=repository, force=True)
            console.print(f"deleted repository {repository}")
            return
        if image_id is None:
            fail("give repo:tag or repo@sha256:..., or --all to delete the repository")
        answer = ecr.batch_delete_image(repositoryName=repository, imageIds=[image_id])
    failures = answer.get("failures", [])
    if failures:
        fail("; ".join(f"{f.get('failureCode')}: {f.get('failureReason')}" for f in failures))
    for deleted in answer.get("imageIds", []):
        console.print(f"deleted {repository}@{deleted.get('imageDigest')}", highlight=False)


def register(app: typer.Typer) -> None:
    """Add ``images list|delete`` to the root app."""
    images = typer.Typer(help="Container images in Hangar's registry (ECR API).", no_args_is_help=True)
    images.command("list")(list_images)
    images.command("delete")(delete_images)
    app.add_typer(images, name="images")
