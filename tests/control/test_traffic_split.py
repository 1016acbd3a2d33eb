"""Traffic split (Hangar-only): an endpoint routes a percentage of NEW sessions to a second version; sessions stay on
the version they started on. A real ``hangar serve``, the ``hangar`` CLI as a subprocess, boto3 for the data plane."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile
import uuid
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.control.support import BUCKET, ROLE, code_artifact, signed, unique_name, wait_settled, wait_until
from tests.support.server import HANGAR_BIN, HangarServer

AGENT_DIR = Path(__file__).parent / "agents" / "whoami"
ENDPOINT = "canary"


@pytest.fixture(scope="module")
def server() -> Iterator[HangarServer]:
    # Sandboxes run as an unprivileged user, which cannot enter pytest's 0700 temp root: use a traversable dir.
    root = Path(tempfile.mkdtemp(prefix="hangar-split-"))
    root.chmod(0o755)
    data_dir = root / "data"
    shutil.copytree(AGENT_DIR, data_dir / "artifacts" / BUCKET / "whoami", ignore=shutil.ignore_patterns("__pycache__"))
    hangar = HangarServer(data_dir=data_dir).start()
    yield hangar
    hangar.stop()
    shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(scope="module")
def runtime(client: Any) -> dict[str, str]:
    """Versions 1 (label v1) and 2 (label v2), both READY; DEFAULT serves 2, endpoint ``canary`` serves 1."""
    artifact = code_artifact("whoami/")
    created = client.create_agent_runtime(
        agentRuntimeName=unique_name("split"),
        agentRuntimeArtifact=artifact,
        roleArn=ROLE,
        environmentVariables={"AGENT_LABEL": "v1"},
    )
    runtime_id = created["agentRuntimeId"]
    assert wait_settled(lambda: client.get_agent_runtime(agentRuntimeId=runtime_id))["status"] == "READY"
    client.create_agent_runtime_endpoint(agentRuntimeId=runtime_id, name=ENDPOINT, agentRuntimeVersion="1")
    client.update_agent_runtime(
        agentRuntimeId=runtime_id,
        agentRuntimeArtifact=artifact,
        roleArn=ROLE,
        environmentVariables={"AGENT_LABEL": "v2"},
    )
    for version in ("1", "2"):
        get = lambda v=version: client.get_agent_runtime(agentRuntimeId=runtime_id, agentRuntimeVersion=v)  # noqa: E731
        assert wait_settled(get)["status"] == "READY"
    for name in ("DEFAULT", ENDPOINT):
        wait_until(
            lambda n=name: client.get_agent_runtime_endpoint(agentRuntimeId=runtime_id, endpointName=n),
            lambda doc: doc["status"] == "READY",
        )
    return {"id": runtime_id, "arn": created["agentRuntimeArn"]}


def cli(server: HangarServer, *args: str) -> subprocess.CompletedProcess[str]:
    env = {key: value for key, value in os.environ.items() if not key.startswith(("AWS_", "HANGAR_"))}
    env.update(HANGAR_ENDPOINT_URL=server.url, HANGAR_DATA_DIR=str(server.data_dir), COLUMNS="200")
    return subprocess.run([str(HANGAR_BIN), *args], env=env, capture_output=True, text=True, timeout=120)


def set_split(server: HangarServer, runtime: dict[str, str], *routes: str) -> dict[str, Any]:
    done = cli(server, "endpoints", "split", runtime["id"], ENDPOINT, *routes, "-o", "json")
    assert done.returncode == 0, done.stderr
    answer: dict[str, Any] = json.loads(done.stdout)
    return answer


def label(server: HangarServer, runtime: dict[str, str], session_id: str) -> str:
    data_plane = server.boto3_client("bedrock-agentcore", read_timeout=120)
    answer = data_plane.invoke_agent_runtime(
        agentRuntimeArn=runtime["arn"], qualifier=ENDPOINT, runtimeSessionId=session_id, payload=b"{}"
    )
    body = json.loads(answer["response"].read())
    assert body["session_id"] == session_id
    return str(body["label"])


def test_validation(server: HangarServer, runtime: dict[str, str]) -> None:
    for routes, message in [
        (("1=90", "9=10"), "no version 9"),
        (("1=80", "2=10"), "sum to 100"),
        (("1=50", "1=50"), "two different versions"),
        (("1=50", "2=25", "2=25"), "exactly two"),
        (("1=100",), "exactly two"),
    ]:
        done = cli(server, "endpoints", "split", runtime["id"], ENDPOINT, *routes)
        assert done.returncode == 1, (routes, done.stdout, done.stderr)
        assert "ValidationException" in done.stderr and message in done.stderr, done.stderr
    bad_weight = signed(
        server,
        "PUT",
        f"/hangar/endpoints/{runtime['id']}/{ENDPOINT}/split",
        json.dumps(
            {"routes": [{"agentRuntimeVersion": "1", "weight": 101}, {"agentRuntimeVersion": "2", "weight": -1}]}
        ).encode(),
    )
    assert bad_weight.status_code == 400 and bad_weight.headers["x-amzn-ErrorType"].startswith("ValidationException")
    assert cli(server, "endpoints", "split", runtime["id"], ENDPOINT, "1=x", "2=10").returncode == 2
    assert cli(server, "endpoints", "split", runtime["id"], "nosuch", "1=50", "2=50").returncode == 3
    shown = cli(server, "endpoints", "split", runtime["id"], ENDPOINT)
    assert shown.returncode == 0 and "no split" in shown.stdout


def test_1000_new_sessions_split_90_10(server: HangarServer, runtime: dict[str, str]) -> None:
    answer = set_split(server, runtime, "1=90", "2=10")
    assert answer["routes"] == [{"agentRuntimeVersion": "1", "weight": 90}, {"agentRuntimeVersion": "2", "weight": 10}]
    assert answer["baseVersion"] == "1"
    path = f"/hangar/endpoints/{runtime['id']}/{ENDPOINT}/split"
    chosen: dict[str, str] = {}
    with httpx.Client() as http:
        for _ in range(1000):
            session_id = str(uuid.uuid4())
            routed = signed(server, "GET", path, query=f"runtimeSessionId={session_id}", http=http)
            assert routed.status_code == 200, routed.text
            chosen[session_id] = routed.json()["agentRuntimeVersion"]
    counts = Counter(chosen.values())
    # Binomial(1000, 0.1): mean 100, standard deviation 9.5; 4.5 deviations either side.
    assert set(counts) == {"1", "2"} and 57 <= counts["2"] <= 143, counts
    # The data plane makes the same choice for a new session, and the same id always gets the same version.
    again = signed(server, "GET", path, query=f"runtimeSessionId={next(iter(chosen))}")
    assert again.json()["agentRuntimeVersion"] == chosen[next(iter(chosen))]
    picks = [sid for sid, v in chosen.items() if v == "2"][:3] + [sid for sid, v in chosen.items() if v == "1"][:3]
    for session_id in picks:
        assert label(server, runtime, session_id) == f"v{chosen[session_id]}", session_id


def test_a_session_keeps_its_version_when_the_split_changes(server: HangarServer, runtime: dict[str, str]) -> None:
    set_split(server, runtime, "1=100", "2=0")
    first = f"split-keep-{uuid.uuid4()}"
    assert label(server, runtime, first) == "v1"
    set_split(server, runtime, "1=0", "2=100")
    assert label(server, runtime, first) == "v1", "a running session stays on the version it started on"
    assert label(server, runtime, f"split-new-{uuid.uuid4()}") == "v2", "a new session follows the new split"
    cleared = cli(server, "endpoints", "split", runtime["id"], ENDPOINT, "--clear", "-o", "json")
    assert cleared.returncode == 0 and json.loads(cleared.stdout)["routes"] == []
    assert label(server, runtime, f"split-after-{uuid.uuid4()}") == "v1", "without a split: the live version"


def test_the_aws_answer_stays_aws_shaped(client: Any, server: HangarServer, runtime: dict[str, str]) -> None:
    set_split(server, runtime, "1=50", "2=50")
    endpoint = client.get_agent_runtime_endpoint(agentRuntimeId=runtime["id"], endpointName=ENDPOINT)
    assert endpoint["liveVersion"] == "1" and "hangar" not in endpoint and "routes" not in endpoint
    # Moving the endpoint retires the split: it was set for the version that was live then.
    client.update_agent_runtime_endpoint(agentRuntimeId=runtime["id"], endpointName=ENDPOINT, agentRuntimeVersion="2")
    wait_until(
        lambda: client.get_agent_runtime_endpoint(agentRuntimeId=runtime["id"], endpointName=ENDPOINT),
        lambda doc: doc["status"] == "READY" and doc.get("liveVersion") == "2",
    )
    shown = cli(server, "endpoints", "split", runtime["id"], ENDPOINT, "-o", "json")
    assert json.loads(shown.stdout)["routes"] == []
