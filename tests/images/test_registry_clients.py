"""Real clients against Hangar's registry: the aws CLI's ``ecr`` commands, skopeo, buildah, podman, the oras SDK
(and docker where its daemon can run), then the quick start's ``create-agent-runtime`` with an ECR containerUri."""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.images.conftest import (
    Buildah,
    aws,
    create_image_runtime,
    ecr_host,
    new_repository,
    registry_host,
    wait_runtime,
)
from tests.support.server import HangarServer


def run(*cmd: str, stdin: str | None = None) -> str:
    result = subprocess.run(list(cmd), capture_output=True, text=True, input=stdin, timeout=300)
    assert result.returncode == 0, f"{' '.join(cmd[:3])} failed: {result.stderr}"
    return result.stdout


@pytest.fixture(scope="module")
def local_image(buildah: Buildah) -> str:
    return buildah.busybox_image("localhost/hangar-test-busybox:v1", "v1")


def skopeo_push(buildah: Buildah, hangar: HangarServer, password: str, image: str, dest: str, tmp: Path) -> None:
    tmp.mkdir(parents=True, exist_ok=True)
    layout = tmp / "layout"
    buildah("push", "--quiet", image, f"oci:{layout}:t")
    run(
        "skopeo",
        "copy",
        "--quiet",
        f"oci:{layout}:t",
        f"docker://{registry_host(hangar)}/{dest}",
        "--dest-creds",
        f"AWS:{password}",
        "--dest-tls-verify=false",
    )


def test_ecr_cli_and_skopeo(hangar: HangarServer, buildah: Buildah, local_image: str, tmp_path: Path) -> None:
    created = json.loads(aws(hangar, "ecr", "create-repository", "--repository-name", "team/quickstart").stdout)
    repo = created["repository"]
    assert repo["repositoryUri"] == f"{ecr_host(hangar)}/team/quickstart"
    assert repo["repositoryArn"] == "arn:aws:ecr:us-west-2:123456789012:repository/team/quickstart"
    again = aws(hangar, "ecr", "create-repository", "--repository-name", "team/quickstart", check=False)
    assert again.returncode != 0 and "RepositoryAlreadyExistsException" in again.stderr
    bad = aws(hangar, "ecr", "create-repository", "--repository-name", "Bad_Name!", check=False)
    assert "InvalidParameterException" in bad.stderr

    password = aws(hangar, "ecr", "get-login-password").stdout.strip()
    skopeo_push(buildah, hangar, password, local_image, "team/quickstart:latest", tmp_path)
    listed = json.loads(aws(hangar, "ecr", "list-images", "--repository-name", "team/quickstart").stdout)
    assert [i["imageTag"] for i in listed["imageIds"]] == ["latest"]
    details = json.loads(aws(hangar, "ecr", "describe-images", "--repository-name", "team/quickstart").stdout)
    detail = details["imageDetails"][0]
    assert detail["imageTags"] == ["latest"] and detail["imageSizeInBytes"] > 500_000
    assert detail["imageDigest"] == listed["imageIds"][0]["imageDigest"]
    described = json.loads(aws(hangar, "ecr", "describe-repositories", "--repository-names", "team/quickstart").stdout)
    assert described["repositories"][0]["repositoryName"] == "team/quickstart"
    missing = aws(hangar, "ecr", "describe-repositories", "--repository-names", "nope/nothing", check=False)
    assert "RepositoryNotFoundException" in missing.stderr

    # pulled back with skopeo: the same manifest, and every blob verifies
    inspected = json.loads(
        run(
            "skopeo",
            "inspect",
            "--raw",
            "--creds",
            f"AWS:{password}",
            "--tls-verify=false",
            f"docker://{registry_host(hangar)}/team/quickstart:latest",
        )
    )
    assert inspected["schemaVersion"] == 2
    run(
        "skopeo",
        "copy",
        "--quiet",
        "--src-creds",
        f"AWS:{password}",
        "--src-tls-verify=false",
        f"docker://{registry_host(hangar)}/team/quickstart:latest",
        f"oci:{tmp_path / 'back'}:t",
    )

    not_empty = aws(hangar, "ecr", "delete-repository", "--repository-name", "team/quickstart", check=False)
    assert "RepositoryNotEmptyException" in not_empty.stderr
    deleted = json.loads(
        aws(
            hangar,
            "ecr",
            "batch-delete-image",
            "--repository-name",
            "team/quickstart",
            "--image-ids",
            "imageTag=latest",
        ).stdout
    )
    assert deleted["imageIds"][0]["imageTag"] == "latest" and deleted["failures"] == []
    gone = json.loads(
        aws(
            hangar,
            "ecr",
            "batch-delete-image",
            "--repository-name",
            "team/quickstart",
            "--image-ids",
            "imageTag=latest",
        ).stdout
    )
    assert gone["failures"][0]["failureCode"] == "ImageNotFound"
    assert (
        json.loads(aws(hangar, "ecr", "list-images", "--repository-name", "team/quickstart").stdout)["imageIds"] == []
    )
    aws(hangar, "ecr", "delete-repository", "--repository-name", "team/quickstart")


def test_a_wrong_or_missing_password_is_refused(hangar: HangarServer, password: str, ecr: Any) -> None:
    import httpx

    bare = httpx.get(f"{hangar.url}/v2/")
    assert bare.status_code == 401
    assert bare.headers["WWW-Authenticate"].startswith("Basic realm=")
    assert bare.headers["Docker-Distribution-API-Version"] == "registry/2.0"
    assert bare.json()["errors"][0]["code"] == "UNAUTHORIZED"
    forged = password[:-4] + ("AAAA" if not password.endswith("AAAA") else "BBBB")
    for user, secret in (("AWS", forged), ("admin", password), ("AWS", "hgr1.e30.AAAA")):
        assert httpx.get(f"{hangar.url}/v2/", auth=(user, secret)).status_code == 401
    assert httpx.get(f"{hangar.url}/v2/", auth=("AWS", password)).status_code == 200


def test_buildah_and_podman_push(
    hangar: HangarServer, buildah: Buildah, local_image: str, password: str, ecr: Any
) -> None:
    repo = new_repository(ecr, "pushers")
    host = registry_host(hangar)
    buildah(
        "push",
        "--quiet",
        "--creds",
        f"AWS:{password}",
        "--tls-verify=false",
        local_image,
        f"docker://{host}/{repo}:buildah",
    )
    if shutil.which("podman") is None:
        pytest.skip("podman is not installed (scripts/system-deps test)")
    podman = [
        "podman",
        "--root",
        str(buildah.root / "root"),
        "--runroot",
        str(buildah.root / "run"),
        "--storage-driver",
        "vfs",
    ]
    run(*podman, "login", "--username", "AWS", "--password-stdin", "--tls-verify=false", host, stdin=password)
    run(*podman, "push", "--quiet", "--tls-verify=false", local_image, f"{host}/{repo}:podman")
    run(*podman, "push", "--quiet", "--tls-verify=false", "--format", "v2s2", local_image, f"{host}/{repo}:docker-v2s2")
    run(*podman, "logout", host)
    details = {tuple(d.get("imageTags", ())): d for d in ecr.describe_images(repositoryName=repo)["imageDetails"]}
    media = {tag: d["imageManifestMediaType"] for tags, d in details.items() for tag in tags}
    assert media["docker-v2s2"] == "application/vnd.docker.distribution.manifest.v2+json"
    assert media["podman"] == "application/vnd.oci.image.manifest.v1+json"
    assert set(media) == {"buildah", "podman", "docker-v2s2"}


def test_oras_push_and_pull(hangar: HangarServer, password: str, ecr: Any, control: Any, tmp_path: Path) -> None:
    oras_client = pytest.importorskip("oras.client")
    repo = new_repository(ecr, "oras")
    artifact = tmp_path / "model.bin"
    artifact.write_bytes(b"weights " * 1000)
    client = oras_client.OrasClient(hostname=registry_host(hangar), insecure=True, auth_backend="basic")
    client.login(username="AWS", password=password, hostname=registry_host(hangar), tls_verify=False)
    target = f"{registry_host(hangar)}/{repo}:v1"
    response = client.push(target=target, files=[str(artifact)], disable_path_validation=True)
    assert response.status_code == 201
    # oras's chunked upload: PATCH with Content-Range per chunk, then PUT ?digest=
    chunked = client.push(
        target=f"{registry_host(hangar)}/{repo}:chunked",
        files=[str(artifact)],
        disable_path_validation=True,
        do_chunked=True,
        chunk_size=1000,
    )
    assert chunked.status_code == 201
    out = tmp_path / "out"
    pulled = client.pull(target=target, outdir=str(out))
    assert [Path(p).read_bytes() for p in pulled] == [artifact.read_bytes()]
    listed = ecr.list_images(repositoryName=repo)["imageIds"]
    assert sorted(i["imageTag"] for i in listed) == ["chunked", "v1"]
    # an artifact is stored and served, but it is not an image an agent can run from
    got = create_image_runtime(control, f"{ecr_host(hangar)}/{repo}:v1")
    assert got["status"] == "CREATE_FAILED" and "is not a container image" in got["failureReason"]


@pytest.fixture(scope="module")
def docker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[list[str]]:
    """A private dockerd (own data root and socket, no iptables or bridge) when this host can run one."""
    dockerd, client = shutil.which("dockerd"), shutil.which("docker")
    if dockerd is None or client is None:
        pytest.skip("docker.io is not installed; skopeo, buildah, podman and oras cover pushes")
    root = tmp_path_factory.mktemp("docker")
    socket = root / "docker.sock"
    process = subprocess.Popen(
        [
            dockerd,
            "--data-root",
            str(root / "data"),
            "--exec-root",
            str(root / "exec"),
            "--pidfile",
            str(root / "pid"),
            "--host",
            f"unix://{socket}",
            "--iptables=false",
            "--bridge=none",
        ],
        stdout=subprocess.DEVNULL,
        stderr=(root / "dockerd.log").open("wb"),
    )
    command = [client, "--host", f"unix://{socket}"]
    deadline = time.monotonic() + 60
    while subprocess.run([*command, "info"], capture_output=True).returncode != 0:
        if process.poll() is not None or time.monotonic() > deadline:
            process.kill()
            tail = (root / "dockerd.log").read_text(errors="replace")[-400:]
            pytest.skip(f"dockerd cannot run on this host: {tail}")
        time.sleep(0.3)
    yield command
    process.terminate()
    process.wait(timeout=30)


def test_docker_login_and_push(
    hangar: HangarServer, buildah: Buildah, local_image: str, password: str, ecr: Any, docker: list[str], tmp_path: Path
) -> None:
    """``docker login --username AWS --password-stdin`` then ``docker push`` (loopback registries are plain HTTP)."""
    repo = new_repository(ecr, "docker")
    host = registry_host(hangar)
    archive = tmp_path / "image.tar"
    buildah("push", "--quiet", local_image, f"docker-archive:{archive}:{host}/{repo}:docker")
    run(*docker, "load", "--quiet", "--input", str(archive))
    run(*docker, "login", "--username", "AWS", "--password-stdin", host, stdin=password)
    run(*docker, "push", f"{host}/{repo}:docker")
    run(*docker, "logout", host)
    detail = ecr.describe_images(repositoryName=repo)["imageDetails"][0]
    assert detail["imageTags"] == ["docker"]
    assert detail["imageManifestMediaType"] == "application/vnd.docker.distribution.manifest.v2+json"


def test_quick_start_create_and_update(
    hangar: HangarServer, buildah: Buildah, password: str, ecr: Any, control: Any, tmp_path: Path
) -> None:
    """The quick start with an ECR containerUri: V1 READY; a new push to the same tag and an update give V2 with
    the new digest (the version pins what the tag meant then); GetAgentRuntime shows the URI as given."""
    repo = new_repository(ecr, "my-agent")
    uri = f"{ecr_host(hangar)}/{repo}:latest"
    skopeo_push(
        buildah, hangar, password, buildah.busybox_image("localhost/qs:v1", "v1"), f"{repo}:latest", tmp_path / "a"
    )
    first_digest = ecr.describe_images(repositoryName=repo)["imageDetails"][0]["imageDigest"]
    artifact = json.dumps({"containerConfiguration": {"containerUri": uri}})
    created = json.loads(
        aws(
            hangar,
            "bedrock-agentcore-control",
            "create-agent-runtime",
            "--agent-runtime-name",
            f"qs_{repo[-8:]}",
            "--agent-runtime-artifact",
            artifact,
            "--network-configuration",
            '{"networkMode": "PUBLIC"}',
            "--role-arn",
            "arn:aws:iam::123456789012:role/agent",
        ).stdout
    )
    runtime_id = created["agentRuntimeId"]
    v1 = wait_runtime(control, runtime_id)
    assert v1["status"] == "READY", v1.get("failureReason")
    assert v1["agentRuntimeArtifact"] == {"containerConfiguration": {"containerUri": uri}}
    rootfs_root = hangar.data_dir / "images" / "rootfs"
    assert (rootfs_root / first_digest.split(":")[1] / "marker").read_text() == "v1\n"

    skopeo_push(
        buildah, hangar, password, buildah.busybox_image("localhost/qs:v2", "v2"), f"{repo}:latest", tmp_path / "b"
    )
    second_digest = ecr.describe_images(repositoryName=repo, imageIds=[{"imageTag": "latest"}])["imageDetails"][0][
        "imageDigest"
    ]
    assert second_digest != first_digest
    control.update_agent_runtime(
        agentRuntimeId=runtime_id,
        agentRuntimeArtifact={"containerConfiguration": {"containerUri": uri}},
        networkConfiguration={"networkMode": "PUBLIC"},
        roleArn="arn:aws:iam::123456789012:role/agent",
    )
    v2 = wait_runtime(control, runtime_id)
    assert (v2["status"], v2["agentRuntimeVersion"]) == ("READY", "2")
    marker = rootfs_root / second_digest.split(":")[1] / "marker"
    assert marker.read_text() == "v2\n"
    # nothing in the store is set-uid or writable by group or others
    for path in (marker, marker.parent / "bin" / "busybox"):
        assert path.stat().st_mode & 0o7022 == 0
    # both busybox layers are the same blob: unpacked once, hard-linked into both images
    busyboxes = {
        (rootfs_root / d.split(":")[1] / "bin" / "busybox").stat().st_ino for d in (first_digest, second_digest)
    }
    assert len(busyboxes) == 1
    assert (
        hashlib.sha256(marker.parent.joinpath("bin", "busybox").read_bytes()).digest()
        == hashlib.sha256(Path("/bin/busybox").read_bytes()).digest()
    )


def test_another_ecr_registry_is_refused_clearly(control: Any) -> None:
    got = create_image_runtime(control, "999999999999.dkr.ecr.eu-west-1.amazonaws.com/agent:latest")
    assert got["status"] == "CREATE_FAILED"
    assert "another ECR registry" in got["failureReason"]
