"""Sessions of container images at the sandbox level: a busybox image (no Python in it) run by the namespace
backend with the image's rootfs as ``/`` through a per-session overlay, its config honoured, Hangar's supervisor
running on the host's interpreter. The rootfs is built from the host's busybox (what G's store would unpack)."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import tempfile
import uuid
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest

from hangar.sandbox.base import Limits, SandboxBackend, SandboxSpec
from hangar.sandbox.selection import namespace_unsupported_reason
from hangar.sandbox.state import instance_tag
from tests.sandbox.fixtures import client, run_exec, started, wait_ping, world_readable_dir
from tests.support.agents.image_rootfs import APP_GID, APP_UID, BUSYBOX_ARGV, busybox_rootfs

pytestmark = [
    pytest.mark.anyio,
    pytest.mark.skipif(namespace_unsupported_reason() is not None, reason=str(namespace_unsupported_reason())),
]


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture(scope="module")
def images() -> Iterator[Path]:
    """World-readable dir holding the test images' rootfs dirs (built once per module)."""
    base = world_readable_dir("hangar-test-images-")
    busybox_rootfs(base / "busybox")
    nosh = busybox_rootfs(base / "nosh")
    (nosh / "bin" / "sh").unlink()
    handler = nosh / "srv" / "handler.sh"
    handler.write_text(handler.read_text().replace("#!/bin/sh", "#!/bin/busybox sh", 1))
    trap = busybox_rootfs(base / "trap")
    host_dir = base / "host-target"
    host_dir.mkdir()
    (trap / "proc").symlink_to(str(host_dir))  # mount points through symlinks must never reach the host
    shutil.rmtree(trap / "tmp")
    (trap / "tmp").symlink_to(str(host_dir))
    (trap / ".hangar").symlink_to(str(host_dir))
    (trap / "etc" / "hosts").symlink_to(str(host_dir / "hosts"))
    yield base
    shutil.rmtree(base, ignore_errors=True)


@pytest.fixture(scope="module")
def backend() -> Iterator[SandboxBackend]:
    from hangar.sandbox.namespace import NamespaceBackend

    root = Path(tempfile.mkdtemp(prefix="hsi-", dir="/tmp"))  # short: socket paths must fit in 108 bytes
    yield NamespaceBackend(state_root=root, tag=instance_tag(root))
    shutil.rmtree(root, ignore_errors=True)


def image_spec(rootfs: Path, **changes: object) -> SandboxSpec:
    spec = SandboxSpec(
        sandbox_id=f"t-{uuid.uuid4().hex[:12]}",
        code_dir=rootfs,
        env_dir=rootfs,
        command=BUSYBOX_ARGV,
        agent_port=8080,
        limits=Limits(memory_bytes=128 << 20, cpus=0.5, pids=64, disk_bytes=8 << 20),
        environment={"GREETING": "from-image", "FROM_RUNTIME": "runtime-value"},
        network="none",
        rootfs=rootfs,
        user="app",
        workdir="/app",
    )
    return replace(spec, **changes)  # type: ignore[arg-type]


async def invoke(sandbox: object, payload: object) -> dict[str, object]:
    async with client(sandbox) as http:  # type: ignore[arg-type]
        response = await http.post("/invocations", content=json.dumps(payload))
    assert response.status_code == 200, response.text
    return response.json()


async def test_busybox_image_serves_the_contract_with_its_config(backend: SandboxBackend, images: Path) -> None:
    async with started(backend, image_spec(images / "busybox")) as sandbox:
        ping = await wait_ping(sandbox)
        assert ping.json() == {"status": "Healthy"}
        answer = await invoke(sandbox, {"prompt": "hi"})
        assert answer["agent"] == "busybox"
        assert (answer["uid"], answer["gid"]) == (APP_UID, APP_GID)  # the image's User, by name
        assert answer["pwd"] == "/app"  # WorkingDir
        assert (answer["greeting"], answer["runtime"]) == ("from-image", "runtime-value")
        assert answer["body"] == {"prompt": "hi"}
        out, _, code, _ = await run_exec(sandbox, "cat /proc/self/uid_map; id -u; cat /app/README; env")
        assert code == 0
        lines = out.decode().splitlines()
        assert lines[0].split()[::2] == [str(APP_UID), "1"]  # only the image's uid is mapped
        for pid in sandbox.cgroup.pids():  # type: ignore[attr-defined]
            status = Path(f"/proc/{pid}/status").read_text()
            host_uid = int(next(x for x in status.splitlines() if x.startswith("Uid:")).split()[1])
            assert host_uid == sandbox.uid and backend.leases.holder(host_uid) == sandbox.id  # type: ignore[attr-defined]
        assert lines[1] == str(APP_UID)
        assert lines[2] == "an image file"
        env = dict(line.split("=", 1) for line in lines[3:] if "=" in line)
        assert env["HOME"] == "/home/app" and env["PORT"] == "8080"
        assert "VIRTUAL_ENV" not in env and not any(k.startswith("LD_") for k in env)


async def test_numeric_user_and_root_default(backend: SandboxBackend, images: Path) -> None:
    for user, expected in (("", (0, 0)), ("4321", (4321, 0)), ("app:0", (APP_UID, 0)), ("77:88", (77, 88))):
        async with started(backend, image_spec(images / "busybox", user=user)) as sandbox:
            await wait_ping(sandbox)
            answer = await invoke(sandbox, {})
            assert (answer["uid"], answer["gid"]) == expected, user


async def test_overlay_writes_are_per_session_and_discarded(backend: SandboxBackend, images: Path) -> None:
    rootfs = images / "busybox"
    before = sorted(str(p.relative_to(rootfs)) for p in rootfs.rglob("*"))
    async with started(backend, image_spec(rootfs)) as one, started(backend, image_spec(rootfs)) as two:
        await asyncio.gather(wait_ping(one), wait_ping(two))
        assert (await invoke(one, {"n": 1}))["first"] == {"n": 1}
        assert (await invoke(two, {"n": 2}))["first"] == {"n": 2}  # not the other session's /tmp/first
        assert (await invoke(one, {"n": 3}))["first"] == {"n": 1}  # state kept within the session
        out, _, code, _ = await run_exec(one, "echo mine > /tmp/t; echo x > /new-top; cat /tmp/first /tmp/t")
        assert code == 0 and out.decode().split() == ['{"n":', "1}", "mine"]
        out, _, code, _ = await run_exec(two, "ls /tmp /new-top 2>&1; cat /tmp/first")
        assert b"mine" not in out and b"No such file" in out and b'"n": 2' in out
        _, _, code, _ = await run_exec(one, "echo no > /bin/busybox")  # image files are root's, the user is app
        assert code != 0
    after = sorted(str(p.relative_to(rootfs)) for p in rootfs.rglob("*"))
    assert after == before  # nothing written reached the image
    async with started(backend, image_spec(rootfs)) as three:
        await wait_ping(three)
        assert (await invoke(three, {"n": 4}))["first"] == {"n": 4}  # a new session starts from the image


async def test_overlay_is_capped_by_the_disk_limit(backend: SandboxBackend, images: Path) -> None:
    async with started(backend, image_spec(images / "busybox")) as sandbox:
        await wait_ping(sandbox)
        fill = "head -c 20000000 /dev/zero > /tmp/big; echo rc=$?; wc -c < /tmp/big"
        out, err, _, _ = await run_exec(sandbox, fill)
        assert b"rc=0" not in out and err  # the write failed (ENOSPC, reported as an I/O error by busybox)
        assert int(out.split()[-1]) <= 8 << 20


async def test_image_without_a_shell_gives_a_clear_command_error(backend: SandboxBackend, images: Path) -> None:
    async with started(backend, image_spec(images / "nosh")) as sandbox:
        await wait_ping(sandbox)
        _, err, code, _ = await run_exec(sandbox, "echo hi")
        assert code == 127 and b"cannot run /bin/sh" in err


async def test_symlinked_mount_points_never_reach_the_host(backend: SandboxBackend, images: Path) -> None:
    host_dir = images / "host-target"
    async with started(backend, image_spec(images / "trap")) as sandbox:
        await wait_ping(sandbox)
        out, _, code, _ = await run_exec(sandbox, "ls /proc/self/status /.hangar; echo hi > /tmp/x; cat /etc/hosts")
        assert code == 0 and b"/proc/self/status" in out and b"localhost" in out
    assert list(host_dir.iterdir()) == []  # nothing was created or written through the image's symlinks


async def test_unknown_user_is_a_clear_error(backend: SandboxBackend, images: Path) -> None:
    from hangar.domain.errors import RuntimeClientError

    with pytest.raises(RuntimeClientError, match="not in its /etc/passwd"):
        await backend.start(image_spec(images / "busybox", user="nobody-here"))
    assert [p for p in backend.state_root.iterdir() if not p.name.startswith(".")] == []  # type: ignore[attr-defined]


def test_nothing_left_mounted(backend: SandboxBackend) -> None:
    mounts = Path("/proc/self/mounts").read_text()
    assert str(backend.state_root) not in mounts  # type: ignore[attr-defined]
    assert os.path.isdir(backend.state_root)  # type: ignore[attr-defined]


async def test_a_working_dir_climbing_out_stays_inside_the_image(backend: SandboxBackend, images: Path) -> None:
    name = f"hangar-escape-{uuid.uuid4().hex[:8]}"
    async with started(backend, image_spec(images / "busybox", workdir=f"/../../../../../../tmp/{name}")) as sandbox:
        assert (await wait_ping(sandbox)).status_code == 200
        assert (await invoke(sandbox, {}))["pwd"] == f"/tmp/{name}"  # made inside the image, as Docker does
    assert not Path(f"/tmp/{name}").exists()  # never on the host


async def test_a_nul_in_the_environment_never_reaches_bwraps_arguments(backend: SandboxBackend, images: Path) -> None:
    spec = image_spec(images / "busybox", environment={"A": "x\0--bind\0/\0/host"})
    with pytest.raises(ValueError, match="NUL"):
        await backend.start(spec)
    assert [p for p in backend.state_root.iterdir() if not p.name.startswith(".")] == []  # type: ignore[attr-defined]


async def test_user_namespaces_for_id_mapping_stay_bounded(
    backend: SandboxBackend, images: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from hangar.sandbox.namespace import image_root

    monkeypatch.setattr(image_root, "USERNS_CACHE", 2)
    for _ in range(4):  # leases rotate: every start has a new uid
        async with started(backend, image_spec(images / "busybox")) as sandbox:
            await wait_ping(sandbox)
            assert (await invoke(sandbox, {"n": 1}))["first"] == {"n": 1}
        assert len(image_root._userns) <= 2


async def test_the_process_backend_refuses_image_sessions(images: Path, tmp_path: Path) -> None:
    from hangar.domain.errors import RuntimeClientError
    from hangar.sandbox.process import ProcessBackend

    with pytest.raises(RuntimeClientError, match="need an isolating sandbox backend"):
        await ProcessBackend(state_root=tmp_path / "state").start(image_spec(images / "busybox"))


@pytest.mark.skipif(not Path("/usr/bin/node").exists(), reason="needs Debian's nodejs to build the image")
async def test_a_node_image_without_shell_or_python_serves(backend: SandboxBackend, images: Path) -> None:
    from tests.support.agents.image_rootfs import NODE_ARGV, node_rootfs

    rootfs = node_rootfs(images / "node")
    assert not (rootfs / "bin").exists() and not list(rootfs.rglob("python*"))
    async with started(backend, image_spec(rootfs, command=NODE_ARGV, user="node", workdir="/app")) as sandbox:
        assert (await wait_ping(sandbox)).json() == {"status": "Healthy"}
        first, second = await invoke(sandbox, {"a": 1}), await invoke(sandbox, {"b": 2})
        assert first["agent"] == "node" and first["uid"] == 1000 and (first["turns"], second["turns"]) == (1, 2)
        assert json.loads(second["body"]) == {"b": 2}
        _, err, code, _ = await run_exec(sandbox, "echo hi")
        assert code == 127 and b"cannot run /bin/sh" in err
