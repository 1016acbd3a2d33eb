"""Shared fixtures of the image tests: ECR and control-plane clients of the module's ``hangar serve``, the
registry password, an aws CLI runner, buildah with its own storage, and waiting for a runtime to settle."""

from __future__ import annotations

import os
import shutil
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.support.oci import RegistryClient, ecr_password
from tests.support.server import HangarServer

ROLE = "arn:aws:iam::123456789012:role/agent"
VENV_BIN = Path(__file__).resolve().parents[2] / ".venv" / "bin"


def ecr_host(server: HangarServer) -> str:
    """The ECR host that names this Hangar's registry in a containerUri (default account and region)."""
    return "123456789012.dkr.ecr.us-west-2.amazonaws.com"


def registry_host(server: HangarServer) -> str:
    return f"127.0.0.1:{server.port}"


@pytest.fixture(scope="module")
def ecr(hangar: HangarServer) -> Any:
    return hangar.boto3_client("ecr")


@pytest.fixture(scope="module")
def control(hangar: HangarServer) -> Any:
    return hangar.boto3_client("bedrock-agentcore-control")


@pytest.fixture(scope="module")
def password(ecr: Any) -> str:
    return ecr_password(ecr)


@pytest.fixture(scope="module")
def registry(hangar: HangarServer, password: str) -> Iterator[RegistryClient]:
    client = RegistryClient(hangar.url, password)
    yield client
    client.close()


def new_repository(ecr: Any, prefix: str = "repo") -> str:
    name = f"{prefix}-{uuid.uuid4().hex[:8]}"
    ecr.create_repository(repositoryName=name)
    return name


def aws_env(server: HangarServer) -> dict[str, str]:
    return {
        **os.environ,
        "AWS_SHARED_CREDENTIALS_FILE": str(server.credentials_file),
        "AWS_CONFIG_FILE": "/dev/null",
        "AWS_DEFAULT_REGION": "us-west-2",
        "AWS_EC2_METADATA_DISABLED": "true",
    }


def aws(server: HangarServer, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    """The aws CLI v1 of the venv against the server (``--endpoint-url``)."""
    cmd = [str(VENV_BIN / "aws"), "--endpoint-url", server.url, *args]
    result = subprocess.run(cmd, capture_output=True, text=True, env=aws_env(server), timeout=120)
    if check and result.returncode != 0:
        raise AssertionError(f"{' '.join(args)} failed: {result.stderr}")
    return result


def wait_runtime(control: Any, runtime_id: str, timeout: float = 120.0) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        got = control.get_agent_runtime(agentRuntimeId=runtime_id)
        if got["status"] not in ("CREATING", "UPDATING"):
            return got
        time.sleep(0.2)
    raise AssertionError(f"runtime {runtime_id} did not settle in {timeout}s")


def create_image_runtime(control: Any, uri: str) -> dict[str, Any]:
    created = control.create_agent_runtime(
        agentRuntimeName=f"img_{uuid.uuid4().hex[:10]}",
        agentRuntimeArtifact={"containerConfiguration": {"containerUri": uri}},
        networkConfiguration={"networkMode": "PUBLIC"},
        roleArn=ROLE,
    )
    return wait_runtime(control, created["agentRuntimeId"])


class Buildah:
    """buildah with private storage (vfs: works unprivileged-ish and in containers) under a test directory."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self._base = ""
        self.base = ["buildah", "--root", str(root / "root"), "--runroot", str(root / "run"), "--storage-driver", "vfs"]

    def __call__(self, *args: str) -> str:
        result = subprocess.run([*self.base, *args], capture_output=True, text=True, timeout=300)
        if result.returncode != 0:
            raise AssertionError(f"buildah {' '.join(args)} failed: {result.stderr}")
        return result.stdout.strip()

    def busybox_image(self, name: str, marker: str = "v1") -> str:
        """A static busybox layer (the same blob in every image) plus a layer with a marker file, committed to
        local storage as ``name``."""
        if not self._base:
            container = self("from", "scratch")
            self("copy", container, "/bin/busybox", "/bin/busybox")
            self("config", "--entrypoint", '["/bin/busybox","httpd","-f","-p","8080"]', container)
            self("commit", "--quiet", container, "localhost/hangar-test-busybox-base:1")
            self("rm", container)
            self._base = "localhost/hangar-test-busybox-base:1"
        container = self("from", self._base)
        marker_file = self.root / f"marker-{marker}"
        marker_file.write_text(marker + "\n")
        self("copy", container, str(marker_file), "/marker")
        self("config", "--env", f"MARKER={marker}", container)
        self("commit", "--quiet", container, name)
        self("rm", container)
        return name


@pytest.fixture(scope="session")
def buildah(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Buildah]:
    if shutil.which("buildah") is None or not Path("/bin/busybox").exists():
        pytest.skip("buildah and busybox-static are needed (scripts/system-deps test installs them)")
    root = tmp_path_factory.mktemp("buildah")
    yield Buildah(root)
    subprocess.run([*Buildah(root).base, "rm", "--all"], capture_output=True, timeout=120)
