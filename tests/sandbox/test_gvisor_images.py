"""Sessions of container images in gVisor: a busybox image (no Python in it) with its rootfs as ``/`` through the
session's overlay, its config honoured (User by name, WorkingDir, Env), commands in the image inside gVisor, and its
limits held: a fork bomb stops at the session's pids limit inside gVisor, the disk at its size cap."""

from __future__ import annotations

import asyncio
import json
import shutil
import tempfile
import uuid
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest

from hangar.sandbox.base import Limits, SandboxSpec
from hangar.sandbox.gvisor import GVisorBackend
from hangar.sandbox.gvisor.backend import host_limits
from hangar.sandbox.gvisor.host import unsupported_reason
from hangar.sandbox.state import instance_tag
from tests.sandbox.fixtures import client, run_exec, started, wait_ping, world_readable_dir
from tests.support.agents.image_rootfs import APP_GID, APP_UID, BUSYBOX_ARGV, busybox_rootfs

REASON = unsupported_reason("runsc", "ptrace")
pytestmark = [pytest.mark.anyio, pytest.mark.skipif(REASON is not None, reason=f"gVisor cannot run here: {REASON}")]
LIMITS = Limits(memory_bytes=256 << 20, cpus=1.0, pids=24, disk_bytes=8 << 20)


@pytest.fixture(scope="module")
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture(scope="module")
def image() -> Iterator[Path]:
    base = world_readable_dir("hangar-gvisor-images-")
    yield busybox_rootfs(base / "busybox")
    shutil.rmtree(base, ignore_errors=True)


@pytest.fixture(scope="module")
def backend() -> Iterator[GVisorBackend]:
    root = Path(tempfile.mkdtemp(prefix="hgi-", dir="/tmp"))  # short: socket paths must fit in 108 bytes
    root.chmod(0o755)
    yield GVisorBackend(state_root=root, tag=instance_tag(root) + "g")
    asyncio.run(GVisorBackend(state_root=root, tag=instance_tag(root) + "g").cleanup_orphans())
    shutil.rmtree(root, ignore_errors=True)


def image_spec(rootfs: Path, **changes: object) -> SandboxSpec:
    spec = SandboxSpec(
        sandbox_id=f"t-{uuid.uuid4().hex[:12]}",
        code_dir=rootfs,
        env_dir=rootfs,
        command=BUSYBOX_ARGV,
        agent_port=8080,
        limits=LIMITS,
        environment={"GREETING": "from-image", "FROM_RUNTIME": "runtime-value"},
        network="none",
        rootfs=rootfs,
        user="app",
        workdir="/app",
    )
    return replace(spec, **changes)  # type: ignore[arg-type]


@pytest.mark.parametrize("user", ["app", "root"])  # root inside gVisor has no capabilities: the limits hold too
async def test_a_busybox_image_serves_in_gvisor_with_its_config_and_limits(
    backend: GVisorBackend, image: Path, user: str
) -> None:
    async with started(backend, image_spec(image, user=user)) as sandbox:
        assert (await wait_ping(sandbox)).json() == {"status": "Healthy"}
        async with client(sandbox) as http:
            response = await http.post("/invocations", content=json.dumps({"prompt": "hi"}))
        answer = response.json()
        ids = (APP_UID, APP_GID) if user == "app" else (0, 0)
        assert answer["agent"] == "busybox" and (answer["uid"], answer["gid"]) == ids
        assert answer["pwd"] == "/app" and (answer["greeting"], answer["runtime"]) == ("from-image", "runtime-value")
        out, err, code, _ = await run_exec(sandbox, "cat /proc/version; cat /app/README; echo new > /tmp/x; cat /tmp/x")
        lines = out.decode().splitlines()
        assert code == 0 and "4.4.0" in lines[0], (out, err)  # gVisor's kernel answers, not the host's
        assert lines[1:] == ["an image file", "new"]  # the image's files, and its per-session writable overlay
        assert not (image / "tmp" / "x").exists()  # the image store itself is untouched
        out, err, code, _ = await run_exec(sandbox, "touch /etc/new && echo wrote")
        assert (out.decode().strip() == "wrote") == (user == "root"), err  # the image's root owns its files
        assert not (image / "etc" / "new").exists()
        bomb = "n=0; while [ $n -lt 200 ]; do sleep 30 </dev/null >/dev/null 2>&1 & "
        bomb += "[ $? -eq 0 ] || break; n=$((n+1)); done"
        out, err, code, _ = await run_exec(sandbox, f"{bomb}; echo $n", 60)
        assert "can't fork" in err.decode(), (out, err)  # busybox sh gives up at the limit gVisor enforces
        assert sandbox.alive() and (await wait_ping(sandbox)).status_code == 200
        assert sandbox.cgroup.pid_count() <= host_limits(LIMITS).pids  # type: ignore[attr-defined]
        _, err, code, _ = await run_exec(sandbox, "dd if=/dev/zero of=/tmp/fill bs=1M count=64")
        assert code != 0 and "No space left on device" in err.decode()
