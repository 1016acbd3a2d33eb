"""9. The same agent deployed as a container image: new-session latency against the code deploys of suite 1.

``bench/agents/echo_sdk`` becomes an image the way a user would ship it: Debian's python3 and its libraries, the
agent's environment (``bench.direct.agent_env``: starlette, uvicorn, ``hangar.sdk``) as site-packages and the code
in ``/app``; built with buildah from a Dockerfile (``FROM scratch``, ``COPY``), pushed to the server's registry with
``skopeo copy`` and the password from ``GetAuthorizationToken``, deployed with an ECR-style ``containerUri``. Samples
are first bytes of the first invoke with a new session id, interleaved with the code runtime forked from its
template (the default) and the cold code runtime. The image's sessions fork from a warm template running on the
image's own python3 (the server must report ``startKind: fork``); a second image runtime with ``HANGAR_TEMPLATE=off``
gives the image's cold row. The issue's target is the forked image within 20 % of code (template).
"""

from __future__ import annotations

import base64
import json
import os
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

from tests.support.agents.image_rootfs import python_rootfs

from bench.context import AGENTS, BenchContext
from bench.direct import agent_env
from bench.hangar_instance import ROLE_ARN
from bench.stats import ratio, summarize_ms
from bench.suites.new_session import hangar_first_bytes

AGENT = "echo_sdk"
DOCKERFILE = 'FROM scratch\nCOPY rootfs/ /\nWORKDIR /app\nCMD ["python3", "/app/main.py"]\n'


def _tools_env(scratch: Path) -> dict[str, str]:
    conf = scratch / "storage.conf"
    conf.write_text(f'[storage]\ndriver = "vfs"\nrunroot = "{scratch}/run"\ngraphroot = "{scratch}/graph"\n')
    return {**os.environ, "CONTAINERS_STORAGE_CONF": str(conf), "BUILDAH_ISOLATION": "chroot"}


def _run(argv: list[str], env: dict[str, str]) -> None:
    done = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=1800, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"{argv[0]} failed: {done.stderr[-2000:]}")


def deploy_image(ctx: BenchContext, name: str, environment: dict[str, str] | None = None) -> str:
    """Build, push and deploy the agent as an image; returns the runtime ARN once READY."""
    if not (shutil.which("buildah") and shutil.which("skopeo")):
        raise RuntimeError("the image suite needs buildah and skopeo (apt-get install buildah skopeo)")
    env_site = next((agent_env(AGENT, []) / "lib").glob("python3*/site-packages"))
    with tempfile.TemporaryDirectory(prefix="hangar-bench-image-", dir="/tmp") as tmp:
        scratch = Path(tmp)
        packages = [p for p in env_site.iterdir() if p.name != "_virtualenv.pth"]
        rootfs = python_rootfs(scratch / "context" / "rootfs", packages)
        shutil.copy(AGENTS / AGENT / "main.py", rootfs / "app" / "main.py")
        (rootfs / "app" / "main.py").chmod(0o644)
        (scratch / "context" / "Dockerfile").write_text(DOCKERFILE)
        env = _tools_env(scratch)
        _run(["buildah", "build", "-q", "-t", "localhost/bench-image:1", str(scratch / "context")], env)
        _run(["buildah", "push", "-q", "localhost/bench-image:1", f"oci:{scratch}/oci:1"], env)
        ecr = ctx.hangar.client("ecr")
        ecr.create_repository(repositoryName=name)
        token = ecr.get_authorization_token()["authorizationData"][0]["authorizationToken"]
        password = base64.b64decode(token).decode().partition(":")[2]
        destination = f"docker://127.0.0.1:{ctx.hangar.port}/{name}:latest"
        creds = ["--dest-tls-verify=false", "--dest-creds", f"AWS:{password}"]
        _run(["skopeo", "copy", "-q", *creds, f"oci:{scratch}/oci:1", destination], env)
    health = json.loads(subprocess.run(["curl", "-s", f"{ctx.hangar.url}/healthz"], capture_output=True).stdout)
    uri = f"{health['accountId']}.dkr.ecr.{health['region']}.amazonaws.com/{name}:latest"
    control = ctx.hangar.client("bedrock-agentcore-control")
    created = control.create_agent_runtime(
        agentRuntimeName=name.replace("-", "_"),
        agentRuntimeArtifact={"containerConfiguration": {"containerUri": uri}},
        roleArn=ROLE_ARN,
        networkConfiguration={"networkMode": "PUBLIC"},
        environmentVariables=environment or {},
    )
    deadline = time.monotonic() + 900
    while time.monotonic() < deadline:
        got = control.get_agent_runtime(agentRuntimeId=created["agentRuntimeId"])
        if got["status"] == "READY":
            return str(created["agentRuntimeArn"])
        if got["status"].endswith("FAILED"):
            raise RuntimeError(f"the image runtime failed: {got.get('failureReason')}")
        time.sleep(0.5)
    raise RuntimeError("the image runtime is not READY after 900 s")


def run(ctx: BenchContext) -> dict[str, object]:
    rounds = ctx.n(20, 2)
    image = deploy_image(ctx, "bench-image")
    image_cold = deploy_image(ctx, "bench-image-cold", {"HANGAR_TEMPLATE": "off"})
    template, cold = ctx.arn(AGENT, "template"), ctx.arn(AGENT, "cold")
    ctx.hangar.wait_template(template)
    ctx.hangar.wait_template(image)
    contestants = ((image, "template"), (image_cold, "cold"), (template, "template"), (cold, "cold"))
    for arn, kind in contestants:
        hangar_first_bytes(ctx, arn, 1, kind)  # warm the page cache for every contestant alike
    samples: dict[str, list[float]] = {"image_template": [], "image_cold": [], "code_template": [], "code_cold": []}
    for _ in range(rounds):
        for (arn, kind), name in zip(contestants, samples, strict=True):
            samples[name] += hangar_first_bytes(ctx, arn, 1, kind)
    summary: dict[str, object] = {name: summarize_ms(values) for name, values in samples.items()}
    p50 = {name: value.get("p50_ms") for name, value in summary.items() if isinstance(value, dict)}
    summary["image_template_over_code_template_p50"] = ratio(p50["image_template"], p50["code_template"])
    summary["image_cold_over_code_cold_p50"] = ratio(p50["image_cold"], p50["code_cold"])
    image_p50, code_p50 = p50["image_template"], p50["code_template"]
    summary["target_within_20_percent_of_code"] = bool(image_p50 and code_p50 and image_p50 <= 1.2 * code_p50)
    return summary
