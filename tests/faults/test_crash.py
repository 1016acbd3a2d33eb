"""kill -9 of ``hangar serve`` (the server process only) under load: invokes, SSE streams, new sessions starting,
control-plane writes and a build in progress. Restarted on the same data dir, the server has every write it
acknowledged, no build stuck CREATING/UPDATING, and nothing of the old sandboxes left on the host (processes,
cgroups, mounts, netns, veths, uid leases: ``tests/support/residue.py``); it is healthy and serves a fresh invoke.
"""

from __future__ import annotations

import json
import os
import shutil
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.control.support import wait_settled
from tests.dataplane.support import BUCKET, ROLE, deploy, new_session_id, seed, wait_for, world_readable_dir
from tests.support import residue
from tests.support.server import HangarServer

LOAD_S = 6.0
pytestmark = pytest.mark.skipif(
    os.geteuid() != 0 or shutil.which("bwrap") is None, reason="needs root and bubblewrap (the namespace backend)"
)


@dataclass
class Acked:
    """What the server acknowledged before the kill, and what each load thread managed (so the test proves load)."""

    runtimes: dict[str, int] = field(default_factory=dict)  # runtime id -> newest acknowledged version
    endpoints: set[tuple[str, str]] = field(default_factory=set)
    done: dict[str, int] = field(default_factory=dict)
    errors: list[str] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def count(self, kind: str) -> None:
        with self.lock:
            self.done[kind] = self.done.get(kind, 0) + 1


@pytest.fixture(scope="module")
def data_dir() -> Iterator[Path]:
    with world_readable_dir("hangar-crash-") as root:
        seed(root / "data", "testbed", "streaming")
        yield root / "data"


def _loop(kind: str, stop: threading.Event, killed: threading.Event, acked: Acked, step: Callable[[], None]) -> None:
    """Run ``step`` until stopped; a failure before the kill is an error of the test, after it expected."""
    while not stop.is_set():
        try:
            step()
        except Exception as exc:  # every failure after the kill is the crash itself
            if not killed.is_set():
                acked.errors.append(f"{kind}: {type(exc).__name__}: {exc}")
            return
        acked.count(kind)


def _control_step(control: Any, acked: Acked) -> Callable[[], None]:
    def step() -> None:
        created = control.create_agent_runtime(
            agentRuntimeName=f"crash_{uuid.uuid4().hex[:8]}",
            agentRuntimeArtifact=_artifact("testbed"),
            roleArn=ROLE,
        )
        runtime_id = created["agentRuntimeId"]
        with acked.lock:
            acked.runtimes[runtime_id] = 1
        wait_for(lambda: control.get_agent_runtime(agentRuntimeId=runtime_id)["status"] != "CREATING", 60, 0.05)
        updated = control.update_agent_runtime(
            agentRuntimeId=runtime_id, agentRuntimeArtifact=_artifact("testbed"), roleArn=ROLE
        )
        with acked.lock:
            acked.runtimes[runtime_id] = int(updated["agentRuntimeVersion"])
        control.create_agent_runtime_endpoint(agentRuntimeId=runtime_id, name="pinned", agentRuntimeVersion="1")
        with acked.lock:
            acked.endpoints.add((runtime_id, "pinned"))

    return step


def _artifact(prefix: str) -> dict[str, Any]:
    return {
        "codeConfiguration": {
            "code": {"s3": {"bucket": BUCKET, "prefix": f"{prefix}/"}},
            "runtime": "PYTHON_3_11",
            "entryPoint": ["main.py"],
        }
    }


def test_sigkill_under_load_loses_nothing_acknowledged_and_leaves_nothing(data_dir: Path) -> None:
    server = HangarServer(data_dir=data_dir).start()
    try:
        control, data = server.boto3_client("bedrock-agentcore-control"), server.boto3_client("bedrock-agentcore")
        testbed = deploy(control, "testbed")["agentRuntimeArn"]
        streaming = deploy(control, "streaming")["agentRuntimeArn"]
        warm_session = new_session_id()

        def invoke(arn: str, session_id: str, payload: dict[str, Any]) -> bytes:
            client = server.boto3_client("bedrock-agentcore")
            answer = client.invoke_agent_runtime(
                agentRuntimeArn=arn, runtimeSessionId=session_id, payload=json.dumps(payload).encode()
            )
            return bytes(answer["response"].read())

        def warm() -> None:
            assert json.loads(invoke(testbed, warm_session, {}))["session"] == warm_session

        def stream() -> None:
            body = invoke(streaming, warm_session, {"prompt": "p", "count": 20})
            assert body.count(b"data:") == 21, body[:200]

        def new_session() -> None:
            assert json.loads(invoke(testbed, new_session_id(), {}))["count"] == 1

        stop, killed, acked = threading.Event(), threading.Event(), Acked()
        steps = {
            "warm": warm,
            "stream": stream,
            "new_session": new_session,
            "new_session_2": new_session,
            "control": _control_step(server.boto3_client("bedrock-agentcore-control"), acked),
        }
        threads = [
            threading.Thread(target=_loop, args=(kind, stop, killed, acked, step), daemon=True)
            for kind, step in steps.items()
        ]
        for thread in threads:
            thread.start()
        time.sleep(LOAD_S)
        # every kind of load has succeeded at least once before the kill (a busy machine may need longer)
        wait_for(lambda: all(acked.done.get(kind) for kind in steps) or acked.errors, timeout=120, interval=0.2)
        # A build certainly in progress: new content (its hash is not cached), created just before the kill.
        shutil.copytree(data_dir / "artifacts" / BUCKET / "testbed", data_dir / "artifacts" / BUCKET / "fresh")
        (data_dir / "artifacts" / BUCKET / "fresh" / "nonce.txt").write_text(uuid.uuid4().hex)
        building = control.create_agent_runtime(
            agentRuntimeName=f"building_{uuid.uuid4().hex[:8]}", agentRuntimeArtifact=_artifact("fresh"), roleArn=ROLE
        )["agentRuntimeId"]
        time.sleep(0.3)
        killed.set()
        server.kill()
        stop.set()
        for thread in threads:
            thread.join(60)
        assert acked.errors == [], acked.errors
        assert {kind: acked.done.get(kind, 0) > 0 for kind in steps} == dict.fromkeys(steps, True), acked.done
        assert acked.runtimes and acked.endpoints, "the control thread acknowledged nothing: the check proves nothing"

        old = residue.snapshot(data_dir)
        assert old.ids, "no sandbox of the killed server on the host: the residue check proves nothing"
        assert residue.processes(old, data_dir), "the sandboxes' processes should outlive the server's kill"

        server.start()
        assert residue.settled(old, data_dir) == []
        assert httpx.get(f"{server.url}/healthz", timeout=10).status_code == 200

        control = server.boto3_client("bedrock-agentcore-control")
        for runtime_id, version in acked.runtimes.items():
            doc = wait_settled(lambda rid=runtime_id: control.get_agent_runtime(agentRuntimeId=rid), timeout=120)
            assert int(doc["agentRuntimeVersion"]) >= version
            listed = control.list_agent_runtime_versions(agentRuntimeId=runtime_id)["agentRuntimes"]
            assert {str(v) for v in range(1, version + 1)} <= {v["agentRuntimeVersion"] for v in listed}
            assert doc["status"] in ("READY", "UPDATE_FAILED", "CREATE_FAILED")
            assert doc["status"] == "READY" or doc.get("failureReason"), doc
        for runtime_id, name in acked.endpoints:
            endpoint = control.get_agent_runtime_endpoint(agentRuntimeId=runtime_id, endpointName=name)
            assert endpoint.get("liveVersion", endpoint.get("targetVersion")) == "1", endpoint
        built = wait_settled(lambda: control.get_agent_runtime(agentRuntimeId=building), timeout=120)
        assert built["status"] == "READY" or (built["status"] == "CREATE_FAILED" and built.get("failureReason")), built

        data = server.boto3_client("bedrock-agentcore")
        fresh = data.invoke_agent_runtime(agentRuntimeArn=testbed, runtimeSessionId=warm_session, payload=b"{}")
        assert json.loads(fresh["response"].read())["count"] == 1  # a new sandbox: nothing of the old one
        answer = data.invoke_agent_runtime(
            agentRuntimeArn=streaming, runtimeSessionId=new_session_id(), payload=b'{"count": 2}'
        )
        assert answer["response"].read().count(b"data:") == 3
        server.stop()
        left = residue.snapshot(data_dir)
        assert residue.residue(left, data_dir) == [], "a clean stop leaves nothing"
    finally:
        server.stop()
