"""AgentCore's container quick start against a real ``hangar serve``, verbatim apart from names and
``--endpoint-url``: an image built with buildah (Debian's), pushed with ``skopeo copy`` after ``aws ecr
get-login-password``, created with ``aws bedrock-agentcore-control create-agent-runtime --agent-runtime-artifact
'{"containerConfiguration": {"containerUri": "<acct>.dkr.ecr.<region>.amazonaws.com/...:latest"}}'``, invoked with
the aws CLI and boto3. The image holds Debian's Python and the real ``bedrock-agentcore`` SDK (copied from the test
venv, no network); nothing of Hangar is in it."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest
import websockets
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials

from hangar.sandbox.selection import namespace_unsupported_reason
from tests.control.support import signed
from tests.sandbox.fixtures import world_readable_dir
from tests.support.agents.image_rootfs import SDK_PACKAGES, distributions, python_rootfs
from tests.support.server import HangarServer, read_admin_key

HERE = Path(__file__).parent
AGENT = HERE.parent / "support" / "agents" / "imagesdk" / "agent.py"
REGION = "us-west-2"
SESSION_HEADER = "X-Amzn-Bedrock-AgentCore-Runtime-Session-Id"
DOCKERFILE = """FROM scratch
COPY rootfs/ /
ENV AGENT_VERSION={version} PYTHONDONTWRITEBYTECODE=1
WORKDIR /app
USER app
ENTRYPOINT ["python3"]
CMD ["/app/agent.py"]
"""

pytestmark = [
    pytest.mark.skipif(namespace_unsupported_reason() is not None, reason=str(namespace_unsupported_reason())),
    pytest.mark.skipif(not (shutil.which("buildah") and shutil.which("skopeo")), reason="needs buildah and skopeo"),
]


@pytest.fixture(scope="module")
def workdir() -> Iterator[Path]:
    path = world_readable_dir("hangar-test-quickstart-")
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture(scope="module")
def tools_env(workdir: Path) -> dict[str, str]:
    """buildah/skopeo with their own storage (vfs, no daemon), the venv's aws CLI v1, nothing of AWS inherited."""
    conf = workdir / "storage.conf"
    conf.write_text(f'[storage]\ndriver = "vfs"\nrunroot = "{workdir}/run"\ngraphroot = "{workdir}/graph"\n')
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "HANGAR_"))}
    env.update(
        CONTAINERS_STORAGE_CONF=str(conf),
        BUILDAH_ISOLATION="chroot",
        PATH=f"{Path(sys.executable).parent}:{env.get('PATH', '/usr/bin:/bin')}",
        AWS_DEFAULT_REGION=REGION,
        AWS_REGION=REGION,
        AWS_EC2_METADATA_DISABLED="true",
    )
    return env


@pytest.fixture(scope="module")
def server(workdir: Path, tools_env: dict[str, str]) -> Iterator[HangarServer]:
    hangar = HangarServer(data_dir=workdir / "data").start()
    tools_env["AWS_SHARED_CREDENTIALS_FILE"] = str(hangar.credentials_file)
    yield hangar
    hangar.stop()


def sh(argv: list[str], env: dict[str, str], stdin: str | None = None) -> str:
    done = subprocess.run(argv, env=env, input=stdin, capture_output=True, text=True, timeout=600, check=False)
    assert done.returncode == 0, f"{argv[:3]} failed: {done.stderr[-3000:]}"
    return done.stdout


@pytest.fixture(scope="module")
def context(workdir: Path) -> Path:
    """The build context: a rootfs with Debian's python3, the SDK and /app/agent.py, and one Dockerfile per version."""
    folder = workdir / "context"
    rootfs = python_rootfs(folder / "rootfs", distributions(*SDK_PACKAGES))
    shutil.copy(AGENT, rootfs / "app" / "agent.py")
    (rootfs / "app" / "agent.py").chmod(0o644)
    for version in ("1", "2"):
        (folder / f"Dockerfile.v{version}").write_text(DOCKERFILE.format(version=version))
    return folder


def build_and_push(server: HangarServer, env: dict[str, str], context: Path, version: str, tag: str) -> None:
    """buildah builds, skopeo copies to Hangar's registry with the password from ``aws ecr get-login-password``."""
    local = f"localhost/imagesdk:v{version}"
    sh(["buildah", "build", "-q", "-f", str(context / f"Dockerfile.v{version}"), "-t", local, str(context)], env)
    layout = context.parent / f"oci-v{version}"
    sh(["buildah", "push", "-q", local, f"oci:{layout}:v{version}"], env)
    password = sh(["aws", "ecr", "get-login-password", "--endpoint-url", server.url], env).strip()
    sh(
        [
            "skopeo",
            "copy",
            "-q",
            "--dest-tls-verify=false",
            "--dest-creds",
            f"AWS:{password}",
            f"oci:{layout}:v{version}",
            f"docker://127.0.0.1:{server.port}/imagesdk:{tag}",
        ],
        env,
    )


def wait_ready(control: Any, runtime_id: str, version: str) -> dict[str, Any]:
    deadline = time.monotonic() + 600
    while True:
        got = control.get_agent_runtime(agentRuntimeId=runtime_id, agentRuntimeVersion=version)
        if got["status"] not in ("CREATING", "UPDATING"):
            return got
        assert time.monotonic() < deadline, got
        time.sleep(0.5)


@pytest.fixture(scope="module")
def runtime(server: HangarServer, tools_env: dict[str, str], context: Path) -> dict[str, Any]:
    account = json.loads(sh(["curl", "-s", f"{server.url}/healthz"], tools_env))["accountId"]
    url = ["--endpoint-url", server.url]
    sh(["aws", "ecr", "create-repository", "--repository-name", "imagesdk", *url], tools_env)
    build_and_push(server, tools_env, context, "1", "latest")
    uri = f"{account}.dkr.ecr.{REGION}.amazonaws.com/imagesdk:latest"
    artifact = json.dumps({"containerConfiguration": {"containerUri": uri}})
    created = json.loads(
        sh(
            [
                "aws",
                "bedrock-agentcore-control",
                "create-agent-runtime",
                "--agent-runtime-name",
                "imagesdk",
                "--agent-runtime-artifact",
                artifact,
                "--network-configuration",
                '{"networkMode": "PUBLIC"}',
                "--role-arn",
                f"arn:aws:iam::{account}:role/AgentRuntimeRole",
                *url,
            ],
            tools_env,
        )
    )
    got = wait_ready(server.boto3_client("bedrock-agentcore-control"), created["agentRuntimeId"], "1")
    assert got["status"] == "READY", got.get("failureReason")
    return {**created, "account": account}


def invoke(data: Any, arn: str, session_id: str, payload: dict[str, Any], **extra: Any) -> dict[str, Any]:
    answer = data.invoke_agent_runtime(
        agentRuntimeArn=arn, runtimeSessionId=session_id, payload=json.dumps(payload), **extra
    )
    return json.loads(answer["response"].read())


def new_session() -> str:
    return f"image-{uuid.uuid4()}"


def test_invocations_keep_state_per_session_in_the_images_python(server: HangarServer, runtime: dict) -> None:
    data = server.boto3_client("bedrock-agentcore")
    arn = runtime["agentRuntimeArn"]
    one, two = new_session(), new_session()
    first = invoke(data, arn, one, {"prompt": "a"})
    assert first["version"] == "1" and first["turns"] == ["a"]
    assert first["python"] == "/usr/bin/python3" and first["cwd"] == "/app" and first["uid"] == 1234
    assert invoke(data, arn, two, {"prompt": "b"})["turns"] == ["b"]
    assert invoke(data, arn, one, {"prompt": "c"})["turns"] == ["a", "c"]
    sessions = signed(server, "GET", "/hangar/sessions/").json()["sessions"]
    described = next(s for s in sessions if s["runtimeSessionId"] == one)
    # Right after READY the version's warm template may still be importing the SDK: then the session says so.
    assert described["startKind"] == "fork" or described["coldReason"], described


def test_sessions_of_the_sdk_image_fork_from_a_template_on_its_python(server: HangarServer, runtime: dict) -> None:
    data = server.boto3_client("bedrock-agentcore")
    arn = runtime["agentRuntimeArn"]
    deadline = time.monotonic() + 120
    while True:
        session = new_session()
        answer = invoke(data, arn, session, {"prompt": "forked"})
        sessions = signed(server, "GET", "/hangar/sessions/").json()["sessions"]
        described = next(s for s in sessions if s["runtimeSessionId"] == session)
        if described["startKind"] == "fork":
            break
        assert time.monotonic() < deadline, described  # the template is up within seconds of READY
        time.sleep(0.5)
    assert answer["turns"] == ["forked"] and answer["session"] == session
    assert (answer["python"], answer["cwd"], answer["uid"]) == ("/usr/bin/python3", "/app", 1234)
    assert invoke(data, arn, session, {"prompt": "again"})["turns"] == ["forked", "again"]


def test_the_aws_cli_invokes_the_image(
    server: HangarServer, runtime: dict, tools_env: dict[str, str], workdir: Path
) -> None:
    out = workdir / "answer.json"
    sh(
        [
            "aws",
            "bedrock-agentcore",
            "invoke-agent-runtime",
            "--endpoint-url",
            server.url,
            "--agent-runtime-arn",
            runtime["agentRuntimeArn"],
            "--qualifier",
            "DEFAULT",
            "--runtime-session-id",
            new_session(),
            "--payload",
            '{"prompt": "from the cli"}',
            str(out),
        ],
        tools_env,
    )
    assert json.loads(out.read_text())["turns"] == ["from the cli"]


def test_sse_streams_from_the_image(server: HangarServer, runtime: dict) -> None:
    data = server.boto3_client("bedrock-agentcore")
    answer = data.invoke_agent_runtime(
        agentRuntimeArn=runtime["agentRuntimeArn"],
        runtimeSessionId=new_session(),
        payload=json.dumps({"stream": True, "prompt": "one two three"}),
    )
    assert answer["contentType"].startswith("text/event-stream")
    events = [json.loads(line[5:]) for line in answer["response"].iter_lines() if line.startswith(b"data:")]
    assert events == [{"word": "one"}, {"word": "two"}, {"word": "three"}]


def test_websocket_reaches_the_image(server: HangarServer, runtime: dict) -> None:
    url = f"ws://127.0.0.1:{server.port}/runtimes/{quote(runtime['agentRuntimeArn'], safe='')}/ws"
    key_id, secret = read_admin_key(server.credentials_file)
    request = AWSRequest(method="GET", url=url.replace("ws://", "http://"), headers={SESSION_HEADER: new_session()})
    SigV4Auth(Credentials(key_id, secret), "bedrock-agentcore", REGION).add_auth(request)
    headers = {k: v for k, v in request.headers.items() if k.lower() != "host"}

    async def talk() -> str:
        async with websockets.connect(url, additional_headers=headers) as ws:
            await ws.send("hello")
            return str(await ws.recv())

    assert asyncio.run(talk()) == "image says hello"


def test_commands_run_in_the_images_rootfs(server: HangarServer, runtime: dict) -> None:
    data = server.boto3_client("bedrock-agentcore")
    session_id = new_session()
    invoke(data, runtime["agentRuntimeArn"], session_id, {"prompt": "x"})
    response = data.invoke_agent_runtime_command(
        agentRuntimeArn=runtime["agentRuntimeArn"],
        runtimeSessionId=session_id,
        body={"command": "id -u; pwd; ls /app; echo $AGENT_VERSION; ls /usr/lib/python3/dist-packages", "timeout": 30},
    )
    chunks = [event["chunk"] for event in response["stream"]]
    out = "".join(c["contentDelta"].get("stdout", "") for c in chunks if "contentDelta" in c)
    assert chunks[-1]["contentStop"]["exitCode"] == 0
    lines = out.splitlines()
    assert lines[:5] == ["1234", "/app", "README", "agent.py", "1"]
    assert "bedrock_agentcore" in lines and "hangar" not in out


def test_update_to_a_new_tag_makes_v2_default_follows_pinned_stays(
    server: HangarServer, runtime: dict, tools_env: dict[str, str], context: Path
) -> None:
    control = server.boto3_client("bedrock-agentcore-control")
    data = server.boto3_client("bedrock-agentcore")
    runtime_id, arn = runtime["agentRuntimeId"], runtime["agentRuntimeArn"]
    control.create_agent_runtime_endpoint(agentRuntimeId=runtime_id, name="pinned", agentRuntimeVersion="1")
    build_and_push(server, tools_env, context, "2", "v2")
    uri = f"{runtime['account']}.dkr.ecr.{REGION}.amazonaws.com/imagesdk:v2"
    updated = control.update_agent_runtime(
        agentRuntimeId=runtime_id,
        agentRuntimeArtifact={"containerConfiguration": {"containerUri": uri}},
        roleArn=f"arn:aws:iam::{runtime['account']}:role/AgentRuntimeRole",
        networkConfiguration={"networkMode": "PUBLIC"},
    )
    assert updated["agentRuntimeVersion"] == "2"
    assert wait_ready(control, runtime_id, "2")["status"] == "READY"
    deadline = time.monotonic() + 60
    while control.get_agent_runtime_endpoint(agentRuntimeId=runtime_id, endpointName="pinned")["status"] != "READY":
        assert time.monotonic() < deadline
        time.sleep(0.2)
    assert invoke(data, arn, new_session(), {"prompt": "d"})["version"] == "2"
    assert invoke(data, arn, new_session(), {"prompt": "p"}, qualifier="pinned")["version"] == "1"
