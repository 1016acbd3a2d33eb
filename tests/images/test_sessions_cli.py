"""``hangar deploy`` of a Dockerfile folder (built with the builder the machine has: buildah here), ``--image REF``,
``hangar images list|delete``, against a real server; the deployed busybox image (no Python) then serves."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from hangar.sandbox.selection import namespace_unsupported_reason
from tests.sandbox.fixtures import world_readable_dir
from tests.support.agents.image_rootfs import BUSYBOX_ARGV, busybox_rootfs
from tests.support.server import HangarServer

HANGAR = Path(sys.executable).parent / "hangar"
DOCKERFILE = f"""FROM scratch
COPY rootfs/ /
ENV GREETING=built-by-hangar-deploy
WORKDIR /app
USER app
CMD {json.dumps(list(BUSYBOX_ARGV))}
"""

pytestmark = [
    pytest.mark.skipif(namespace_unsupported_reason() is not None, reason=str(namespace_unsupported_reason())),
    pytest.mark.skipif(not shutil.which("buildah"), reason="needs buildah"),
]


@pytest.fixture(scope="module")
def workdir() -> Iterator[Path]:
    path = world_readable_dir("hangar-test-imagecli-")
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture(scope="module")
def server(workdir: Path) -> Iterator[HangarServer]:
    hangar = HangarServer(data_dir=workdir / "data").start()
    yield hangar
    hangar.stop()


@pytest.fixture(scope="module")
def env(workdir: Path, server: HangarServer) -> dict[str, str]:
    conf = workdir / "storage.conf"
    conf.write_text(f'[storage]\ndriver = "vfs"\nrunroot = "{workdir}/run"\ngraphroot = "{workdir}/graph"\n')
    found = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "HANGAR_"))}
    found.update(
        CONTAINERS_STORAGE_CONF=str(conf),
        BUILDAH_ISOLATION="chroot",
        HANGAR_DATA_DIR=str(server.data_dir),
        HANGAR_ENDPOINT_URL=server.url,
        COLUMNS="200",
    )
    return found


def hangar(args: list[str], env: dict[str, str], ok: bool = True) -> subprocess.CompletedProcess[str]:
    done = subprocess.run([str(HANGAR), *args], env=env, capture_output=True, text=True, timeout=600, check=False)
    if ok:
        assert done.returncode == 0, done.stderr + done.stdout
    return done


def invoke(server: HangarServer, arn: str) -> dict[str, object]:
    data = server.boto3_client("bedrock-agentcore")
    answer = data.invoke_agent_runtime(
        agentRuntimeArn=arn, runtimeSessionId=f"cli-{uuid.uuid4()}", payload=json.dumps({"from": "cli"})
    )
    return json.loads(answer["response"].read())


def test_deploy_a_dockerfile_folder_then_an_image_reference_then_delete(
    workdir: Path, server: HangarServer, env: dict[str, str]
) -> None:
    folder = workdir / "agent"
    busybox_rootfs(folder / "rootfs")
    (folder / "Dockerfile").write_text(DOCKERFILE)
    deployed = json.loads(hangar(["deploy", str(folder), "--name", "clibox", "--json"], env).stdout)
    assert deployed["status"] == "READY" and deployed["agentRuntimeVersion"] == "1"
    uri = deployed["artifact"]
    account = deployed["agentRuntimeArn"].split(":")[4]
    assert uri.startswith(f"{account}.dkr.ecr.us-west-2.amazonaws.com/clibox:")
    answer = invoke(server, deployed["agentRuntimeArn"])
    assert answer["agent"] == "busybox" and answer["greeting"] == "built-by-hangar-deploy" and answer["uid"] == 1234

    listed = json.loads(hangar(["images", "list", "--json"], env).stdout)
    tag = uri.rsplit(":", 1)[1]
    assert [(i["repositoryName"], i["imageTags"]) for i in listed] == [("clibox", [tag])]
    table = hangar(["images", "list"], env).stdout
    assert "clibox" in table and tag in table

    again = json.loads(hangar(["deploy", "--image", uri, "--name", "clibox2", "--json"], env).stdout)
    assert again["status"] == "READY" and again["artifact"] == uri
    assert invoke(server, again["agentRuntimeArn"])["agent"] == "busybox"

    assert "deleted clibox@sha256:" in hangar(["images", "delete", f"clibox:{tag}"], env).stdout
    assert json.loads(hangar(["images", "list", "--json"], env).stdout) == []
    missing = hangar(["images", "delete", "clibox:nope"], env, ok=False)
    assert missing.returncode == 1 and "error" in missing.stderr
    assert "deleted repository clibox" in hangar(["images", "delete", "clibox", "--all"], env).stdout
    assert invoke(server, again["agentRuntimeArn"])["agent"] == "busybox"  # a version keeps its unpacked rootfs


def test_deploy_without_a_folder_or_image_is_a_clear_error(env: dict[str, str]) -> None:
    done = hangar(["deploy", "--name", "nothing"], env, ok=False)
    assert done.returncode == 2 and "--image" in done.stderr  # docs/cli.md: 2 = usage
