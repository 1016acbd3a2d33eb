"""Persistent session storage (``filesystemConfigurations`` ``sessionStorage``) on a real ``hangar serve`` with real
namespace sandboxes, driven through InvokeAgentRuntimeCommand (a shell inside the session).

A session's files survive StopRuntimeSession, idle reaping and a kill -9 of Hangar (same id: every byte, mode,
mtime and symlink; new id: empty); forked and cold sessions both mount it; a version update resets it; expiry
deletes it. Hostile: symlinks to host paths and to another session's storage, filling it past its cap, hard links
out of it, concurrent first calls.
"""

from __future__ import annotations

import concurrent.futures
import hashlib
import json
import os
import shutil
import subprocess
import tempfile
import time
import uuid
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from botocore.exceptions import ClientError

from hangar.config import Settings
from hangar.domain.invocation import InvocationTarget, PreparedVersion
from hangar.sandbox.base import Limits, SandboxSpec, Volume
from hangar.sandbox.selection import namespace_unsupported_reason
from hangar.sandbox.state import instance_tag
from hangar.sessions.storage import SessionStorage
from tests.dataplane.support import deploy, new_session_id, seed, sessions, wait_for, world_readable_dir
from tests.images.test_sessions_fork import AGENT as FORK_AGENT
from tests.images.test_sessions_fork import AGENT_ARGV as FORK_AGENT_ARGV
from tests.images.test_sessions_fork import PACKAGES as FORK_PACKAGES
from tests.sandbox.fixtures import run_exec, wait_ping
from tests.support.agents.image_rootfs import APP_GID, APP_UID, distributions, python_rootfs
from tests.support.server import HANGAR_BIN, HangarServer

MOUNT = "/mnt/work"
STORAGE = {"sessionStorage": {"mountPath": MOUNT}}
CAP_MIB = 300
SCALE = 0.05  # lifecycles 20x faster: an idle timeout of 60 s is 3 s, 14 days are 16.8 hours
LONG = {"idleRuntimeSessionTimeout": 1209600, "maxLifetime": 1209600}


@pytest.fixture(scope="module")
def root() -> Iterator[Path]:
    if namespace_unsupported_reason() is not None:
        pytest.skip(f"session storage needs the namespace backend: {namespace_unsupported_reason()}")
    with world_readable_dir("hangar-storage-") as path:
        seed(path / "data", "testbed")
        yield path


EFS_RW = "arn:aws:elasticfilesystem:us-west-2:123456789012:access-point/fsap-0123456789abcdef0"
EFS_RO = "arn:aws:elasticfilesystem:us-west-2:123456789012:access-point/fsap-0123456789abcdef1"
EFS_UNMAPPED = "arn:aws:elasticfilesystem:us-west-2:123456789012:access-point/fsap-0123456789abcdef2"


def _server(root: Path) -> HangarServer:
    shared = root / "shared"
    shared.mkdir(mode=0o777, exist_ok=True)
    shared.chmod(0o777)  # every session's leased uid writes here
    (root / "reference").mkdir(exist_ok=True)
    (root / "reference" / "readme").write_text("read me")
    env = {
        "HANGAR_FILESYSTEM_ACCESS_POINTS": json.dumps({EFS_RW: f"{shared}:rw", EFS_RO: str(root / "reference")}),
        "HANGAR_SESSION_STORAGE_MIB": str(CAP_MIB),
        "HANGAR_SANDBOX_BACKEND": "namespace",
        "HANGAR_SESSION_TIME_SCALE": str(SCALE),
    }
    return HangarServer(data_dir=root / "data", env=env)


@pytest.fixture(scope="module")
def server(root: Path) -> Iterator[HangarServer]:
    hangar = _server(root).start()
    try:
        yield hangar
    finally:
        hangar.stop()


@pytest.fixture(scope="module")
def runtime(control: Any) -> dict[str, Any]:
    return deploy(control, "testbed", filesystemConfigurations=[STORAGE], lifecycleConfiguration=LONG)


def run(data: Any, runtime: dict[str, Any], session_id: str, command: str, timeout: int = 120) -> tuple[int, str]:
    """Exit code and stdout+stderr of ``sh -c command`` inside the session."""
    response = data.invoke_agent_runtime_command(
        agentRuntimeArn=runtime["agentRuntimeArn"],
        runtimeSessionId=session_id,
        body={"command": command, "timeout": timeout},
    )
    out, code = [], None
    for event in response["stream"]:
        chunk = event.get("chunk", {})
        delta = chunk.get("contentDelta", {})
        out.append(delta.get("stdout", "") + delta.get("stderr", ""))
        if "contentStop" in chunk:
            code = chunk["contentStop"].get("exitCode")
    return int(code if code is not None else -1), "".join(out)


def ok(data: Any, runtime: dict[str, Any], session_id: str, command: str) -> str:
    code, out = run(data, runtime, session_id, command)
    assert code == 0, out
    return out


def stop(data: Any, runtime: dict[str, Any], session_id: str) -> None:
    data.stop_runtime_session(agentRuntimeArn=runtime["agentRuntimeArn"], runtimeSessionId=session_id)


def entry(server: HangarServer, session_id: str) -> dict[str, Any]:
    return next(s for s in sessions(server) if s["runtimeSessionId"] == session_id and s["state"] != "Terminated")


WRITE = f"""
set -e
cd {MOUNT}
head -c 209715200 /dev/urandom > big.bin
printf 'hello' > small.txt && chmod 0640 small.txt && touch -d '2001-02-03 04:05:06' small.txt
mkdir -p deep/er && printf 'x' > deep/er/leaf && chmod 0700 deep
ln -s small.txt link && ln -s /etc/hostname abs-link
"""
# what a session sees of its storage: per file its type, mode, mtime, size, link target and content hash
SNAPSHOT = f"""
cd {MOUNT} && find . -mindepth 1 | sort | while read p; do
  printf '%s %s %s ' "$p" "$(stat -c '%F %a %Y %s %u' "$p")" "$(readlink "$p")"
  if [ -f "$p" ] && [ ! -L "$p" ]; then sha256sum < "$p" | cut -c1-16; else echo; fi
done
"""


def test_files_survive_stop_and_kill_and_new_ids_start_empty(
    server: HangarServer, data: Any, runtime: dict[str, Any]
) -> None:
    sid = new_session_id()
    ok(data, runtime, sid, WRITE)
    before = ok(data, runtime, sid, SNAPSHOT)
    assert "./big.bin regular file 644" in before and "./link symbolic link 777" in before, before
    assert "./small.txt regular file 640 981173106 5 1000" in before, before
    assert entry(server, sid)["storageBytes"] >= 200 << 20
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "HANGAR_"))}
    env.update(HANGAR_ENDPOINT_URL=server.url, HANGAR_DATA_DIR=str(server.data_dir), COLUMNS="300")
    listed = subprocess.run([str(HANGAR_BIN), "sessions", "list"], env=env, capture_output=True, text=True, timeout=60)
    assert f"/{CAP_MIB} MiB" in listed.stdout, listed.stdout + listed.stderr
    kinds = {entry(server, sid)["startKind"]}

    stop(data, runtime, sid)
    assert ok(data, runtime, sid, SNAPSHOT) == before, "after StopRuntimeSession"
    kinds.add(entry(server, sid)["startKind"])

    other = new_session_id()
    assert ok(data, runtime, other, f"ls -A {MOUNT}; stat -c '%a %u' {MOUNT}").split() == ["700", "1000"]

    server.kill()
    server.start()
    assert ok(data, runtime, sid, SNAPSHOT) == before, "after kill -9 and a restart"
    kinds.add(entry(server, sid)["startKind"])
    assert {"cold", "fork"} <= kinds, kinds


def storage_dir(root: Path, runtime: dict[str, Any], session_id: str) -> Path:
    digest = hashlib.sha256(session_id.encode()).hexdigest()[:40]
    return root / "data" / "session-storage" / runtime["agentRuntimeId"] / digest


def ended(server: HangarServer, session_id: str) -> dict[str, Any] | None:
    """Its newest Terminated record (a call after the end may already have started the session anew)."""
    done = [s for s in sessions(server) if s["runtimeSessionId"] == session_id and s["state"] == "Terminated"]
    return done[0] if done else None


@pytest.mark.parametrize("lifecycle", ["idle", "max lifetime"])
def test_files_survive_idle_and_max_lifetime_termination(
    server: HangarServer, control: Any, data: Any, lifecycle: str
) -> None:
    timeouts = {"idleRuntimeSessionTimeout": 60, "maxLifetime": 1209600}
    if lifecycle == "max lifetime":  # kept busy below, so that only its lifetime can end it
        timeouts = {"idleRuntimeSessionTimeout": 120, "maxLifetime": 120}
    rt = deploy(control, "testbed", filesystemConfigurations=[STORAGE], lifecycleConfiguration=timeouts)
    sid = new_session_id()
    ok(data, rt, sid, f"echo kept > {MOUNT}/note && chmod 600 {MOUNT}/note")
    deadline = time.monotonic() + 120
    while (reaped := ended(server, sid)) is None:
        assert time.monotonic() < deadline, f"the session never ended by {lifecycle}"
        if lifecycle == "max lifetime":
            ok(data, rt, sid, "true")
        time.sleep(0.5)
    assert reaped["endReason"] == ("idle timeout" if lifecycle == "idle" else "max lifetime reached"), reaped
    assert ok(data, rt, sid, f"stat -c %a {MOUNT}/note; cat {MOUNT}/note").split() == ["600", "kept"]


def test_a_version_update_resets_the_storage(server: HangarServer, control: Any, data: Any) -> None:
    rt = deploy(control, "testbed", filesystemConfigurations=[STORAGE], lifecycleConfiguration=LONG)
    sid = new_session_id()
    ok(data, rt, sid, f"echo v1 > {MOUNT}/from-v1")
    stop(data, rt, sid)
    control.update_agent_runtime(
        agentRuntimeId=rt["agentRuntimeId"],
        agentRuntimeArtifact=rt["agentRuntimeArtifact"],
        roleArn=rt["roleArn"],
        networkConfiguration=rt["networkConfiguration"],
        filesystemConfigurations=[STORAGE],
        lifecycleConfiguration=LONG,
    )
    wait_for(lambda: control.get_agent_runtime(agentRuntimeId=rt["agentRuntimeId"])["status"] == "READY", 300)
    assert ok(data, rt, sid, f"ls -A {MOUNT}; echo end").split() == ["end"]
    assert entry(server, sid)["agentRuntimeVersion"] == "2"


def test_expired_storage_is_deleted(server: HangarServer, root: Path, data: Any, runtime: dict[str, Any]) -> None:
    """Expiry is a sweep over the recorded last use: the record is moved 15 days back, the sweep at start runs."""
    sid, fresh = new_session_id(), new_session_id()
    for session_id in (sid, fresh):
        ok(data, runtime, session_id, f"echo old > {MOUNT}/file")
        stop(data, runtime, session_id)
    meta_path = storage_dir(root, runtime, sid) / "meta.json"
    meta = json.loads(meta_path.read_text())
    meta["lastUsedAt"] = time.time() - 15 * 24 * 3600
    meta_path.write_text(json.dumps(meta))
    server.stop()
    server.start()
    assert not storage_dir(root, runtime, sid).exists()
    assert ok(data, runtime, sid, f"ls -A {MOUNT}; echo end").split() == ["end"]
    assert ok(data, runtime, fresh, f"cat {MOUNT}/file").strip() == "old"


def forked_session(server: HangarServer, data: Any, runtime: dict[str, Any]) -> str:
    """A new session started by fork (the version's template may still be warming up for the first ones)."""

    def attempt() -> str | None:
        sid = new_session_id()
        ok(data, runtime, sid, "true")
        if entry(server, sid)["startKind"] == "fork":
            return sid
        stop(data, runtime, sid)
        return None

    return wait_for(attempt, timeout=120, interval=0.5)


def test_symlinks_in_storage_reach_nothing_of_the_host(
    server: HangarServer, root: Path, data: Any, runtime: dict[str, Any]
) -> None:
    victim, attacker = new_session_id(), forked_session(server, data, runtime)
    ok(data, runtime, victim, f"echo secret > {MOUNT}/secret")
    victim_host = storage_dir(root, runtime, victim)
    (root / "host-only.txt").write_text("host")
    plant = (
        f"cd {MOUNT} && ln -s {root}/host-only.txt host && ln -s {victim_host}/mnt/secret other "
        f"&& ln -s {victim_host}/storage.ext4 image && ln -s /proc/1/root/etc/shadow shadow"
    )
    ok(data, runtime, attacker, plant)
    # a forked session's view of the host's slots (every fork's storage passes there) is covered and cut off
    assert ok(data, runtime, attacker, "ls -A /run/hangar-slots 2>/dev/null | wc -l").strip() == "0"
    for name in ("host", "other", "image", "shadow"):
        code, out = run(data, runtime, attacker, f"cat {MOUNT}/{name}")
        assert code != 0 and "secret" not in out and "host" not in out.replace(f"{MOUNT}/host", ""), (name, out)
    stop(data, runtime, attacker)
    stop(data, runtime, victim)  # Hangar never followed the links while unmounting and recording use
    assert (root / "host-only.txt").read_text() == "host"
    assert ok(data, runtime, victim, f"cat {MOUNT}/secret").strip() == "secret"
    assert ok(data, runtime, attacker, f"readlink {MOUNT}/other").strip() == f"{victim_host}/mnt/secret"


def test_filling_past_the_cap_is_enospc_inside_only(root: Path, data: Any, runtime: dict[str, Any]) -> None:
    sid = new_session_id()
    code, out = run(data, runtime, sid, f"head -c {(CAP_MIB + 50) << 20} /dev/zero > {MOUNT}/fill")
    assert code != 0 and "No space left on device" in out, out
    image = storage_dir(root, runtime, sid) / "storage.ext4"
    assert image.stat().st_size == CAP_MIB << 20
    assert image.stat().st_blocks * 512 <= (CAP_MIB + 1) << 20
    ok(data, runtime, sid, f"rm {MOUNT}/fill && echo after > {MOUNT}/after")  # the session goes on


def test_hard_links_to_files_outside_fail(data: Any, runtime: dict[str, Any]) -> None:
    sid = new_session_id()
    for outside in ("/tmp/mine", "/etc/hostname", "/opt/hangar/supervisor.py"):
        code, out = run(data, runtime, sid, f"touch /tmp/mine; ln {outside} {MOUNT}/hl")
        assert code != 0 and "cross-device" in out.lower(), out
    code, out = run(data, runtime, sid, f"echo in > {MOUNT}/a && ln {MOUNT}/a {MOUNT}/b && cat {MOUNT}/b")
    assert code == 0 and out.strip() == "in", out  # inside its own storage, hard links work


def test_concurrent_first_calls_share_one_storage(
    server: HangarServer, root: Path, data: Any, runtime: dict[str, Any]
) -> None:
    sid = new_session_id()
    with concurrent.futures.ThreadPoolExecutor(6) as pool:
        results = list(pool.map(lambda i: run(data, runtime, sid, f"echo {i} >> {MOUNT}/who"), range(6)))
    assert all(code == 0 for code, _ in results), results
    assert sorted(ok(data, runtime, sid, f"cat {MOUNT}/who").split()) == [str(i) for i in range(6)]
    assert len([s for s in sessions(server) if s["runtimeSessionId"] == sid and s["state"] != "Terminated"]) == 1
    assert [p.name for p in storage_dir(root, runtime, sid).iterdir() if p.name.startswith("storage")] == [
        "storage.ext4"
    ]


@pytest.mark.parametrize(
    ("configurations", "expected"),
    [
        ([{"sessionStorage": {"mountPath": "/data/x"}}], "regular expression pattern: /mnt/"),
        ([{"sessionStorage": {"mountPath": "/data"}}], "length greater than or equal to 6"),
        ([{"sessionStorage": {"mountPath": "/mnt/a/b"}}], "regular expression pattern: /mnt/"),
        (
            [
                {"sessionStorage": {"mountPath": "/mnt/a"}},
                {"efsAccessPoint": {"accessPointArn": EFS_RW, "mountPath": "/mnt/a/"}},
            ],
            "Mount paths must be unique",
        ),
        ([{"sessionStorage": {"mountPath": f"/mnt/s{i}"}} for i in range(6)], "length less than or equal to 5"),
        ([{"sessionStorage": {"mountPath": "/mnt/a"}}, {"sessionStorage": {"mountPath": "/mnt/b"}}], "at most one"),
        ([{"capacityProviderVolume": {"volumeName": "v", "mountPath": "/mnt/v"}}], "no capacity providers"),
        ([{"efsAccessPoint": {"accessPointArn": "arn:aws:s3:::bucket", "mountPath": "/mnt/e"}}], "pattern"),
        ([{}], "exactly one of"),
    ],
)
def test_invalid_filesystem_configurations_are_refused(
    server: HangarServer, configurations: Any, expected: str
) -> None:
    """Checked by Hangar itself (the client's own validation is off: what boto3 would catch first, Hangar catches)."""
    control = server.boto3_client("bedrock-agentcore-control", parameter_validation=False)
    with pytest.raises(ClientError) as caught:
        deploy(control, "testbed", filesystemConfigurations=configurations)
    assert caught.value.response["Error"]["Code"] == "ValidationException"
    assert expected in caught.value.response["Error"]["Message"], caught.value.response["Error"]["Message"]


def test_a_backend_that_cannot_mount_it_refuses_the_session(control: Any, data: Any) -> None:
    """gVisor sessions (a runtime that asks for it) cannot have it: a clear 424, never a session without its files."""
    rt = deploy(
        control,
        "testbed",
        filesystemConfigurations=[STORAGE],
        environmentVariables={"HANGAR_SANDBOX_BACKEND": "gvisor"},
    )
    with pytest.raises(ClientError) as caught:
        run(data, rt, new_session_id(), "true")
    assert caught.value.response["ResponseMetadata"]["HTTPStatusCode"] == 424
    assert "filesystemConfigurations need the namespace sandbox backend" in str(caught.value)


def test_get_returns_the_configurations(control: Any, runtime: dict[str, Any]) -> None:
    assert runtime["filesystemConfigurations"] == [STORAGE]


def test_shared_volumes_are_shared_by_the_runtime_s_sessions(root: Path, control: Any, data: Any) -> None:
    rt = deploy(
        control,
        "testbed",
        lifecycleConfiguration=LONG,
        filesystemConfigurations=[
            {"efsAccessPoint": {"accessPointArn": EFS_RW, "mountPath": "/mnt/shared"}},
            {"efsAccessPoint": {"accessPointArn": EFS_RO, "mountPath": "/mnt/ref"}},
            {"s3BucketMount": {"bucket": "agents", "prefix": "testbed", "mountPath": "/mnt/bucket"}},
        ],
    )
    one, two = new_session_id(), new_session_id()
    ok(data, rt, one, "echo from-one > /mnt/shared/note")
    assert ok(data, rt, two, "cat /mnt/shared/note /mnt/ref/readme") == "from-one\nread me"
    assert "main.py" in ok(data, rt, two, "ls /mnt/bucket")
    for path in ("/mnt/ref/x", "/mnt/bucket/x"):
        code, out = run(data, rt, two, f"echo no > {path}")
        assert code != 0 and "Read-only file system" in out, out
    assert (root / "shared" / "note").read_text() == "from-one\n"

    unmapped = deploy(
        control,
        "testbed",
        filesystemConfigurations=[{"efsAccessPoint": {"accessPointArn": EFS_UNMAPPED, "mountPath": "/mnt/e"}}],
    )
    with pytest.raises(ClientError) as caught:
        run(data, unmapped, new_session_id(), "true")
    assert caught.value.response["Error"]["Code"] == "ValidationException"
    assert "not mapped by the operator" in caught.value.response["Error"]["Message"]


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def _target(runtime_id: str, version: str, code: Path) -> InvocationTarget:
    return InvocationTarget(
        account_id="123456789012",
        runtime_id=runtime_id,
        runtime_arn=f"arn:aws:bedrock-agentcore:us-west-2:123456789012:runtime/{runtime_id}",
        runtime_name="image",
        endpoint_name="DEFAULT",
        version=version,
        protocol="HTTP",
        port=8080,
        path="/invocations",
        network_mode="PUBLIC",
        idle_timeout_s=900,
        max_lifetime_s=28800,
        prepared=PreparedVersion(code, code, ("main.py",), "hash"),
        filesystems=(STORAGE,),
    )


@pytest.mark.anyio
@pytest.mark.skipif(namespace_unsupported_reason() is not None, reason=str(namespace_unsupported_reason()))
async def test_image_sessions_cold_and_forked_get_storage_and_volumes() -> None:
    """A Python image (User app = 1234:2345): cold and forked sessions get the storage at its mount path, made in
    their own overlay roots and owned by the image's user, and a read-write volume; forks carry both into the root
    they pivot into."""
    from hangar.sandbox.namespace.backend import NamespaceBackend
    from hangar.sandbox.namespace.storage import unmount_slots

    base = Path(tempfile.mkdtemp(prefix="hss-", dir="/tmp"))  # short: socket paths must fit in 108 bytes
    base.chmod(0o755)
    rootfs = python_rootfs(base / "rootfs", distributions(*FORK_PACKAGES))
    (rootfs / "app" / "main.py").write_text(FORK_AGENT)
    (rootfs / "app" / "main.py").chmod(0o644)
    shared = base / "shared"
    shared.mkdir(mode=0o777)
    shared.chmod(0o777)
    backend = NamespaceBackend(state_root=base / "state", tag=instance_tag(base))
    store = SessionStorage(Settings(data_dir=base / "data", session_storage_mib=32), "namespace")
    target = _target("image-0123456789", "1", rootfs)
    spec = SandboxSpec(
        sandbox_id=f"t-{uuid.uuid4().hex[:12]}",
        code_dir=rootfs,
        env_dir=rootfs,
        command=FORK_AGENT_ARGV,
        agent_port=8080,
        limits=Limits(memory_bytes=256 << 20, cpus=0.5, pids=48, disk_bytes=8 << 20),
        network="none",
        rootfs=rootfs,
        user="app",
        workdir="/app",
        storage_path=MOUNT,
        volumes=(Volume("/mnt/shared", shared, read_only=False),),
    )
    template = await backend.start_template(spec)
    try:
        for kind in ("cold", "fork", "fork-again"):
            mount = await store.acquire(target, "image-session")
            session = replace(spec, sandbox_id=f"s-{uuid.uuid4().hex[:12]}", storage=mount)
            sandbox = await (backend.start(session) if kind == "cold" else backend.fork(template, session))
            try:
                await wait_ping(sandbox)
                command = (
                    f"echo {kind} >> {MOUNT}/log && stat -c '%u %g %a' {MOUNT} && echo {kind} > /mnt/shared/{kind}"
                )
                out, err, code, _ = await run_exec(sandbox, command)
                assert code == 0, (kind, out, err)
                assert out.decode().split() == [str(APP_UID), str(APP_GID), "700"], kind
                out, _, _, _ = await run_exec(sandbox, "ls -A /run/hangar-slots 2>/dev/null | wc -l")
                assert out.decode().strip() == "0", kind
            finally:
                await sandbox.stop()
                await store.release(target.runtime_id, "image-session")
        assert template.forks >= 2
        assert not (rootfs / "mnt").exists()  # the mount points were made in the sessions' overlays only
        assert sorted(p.name for p in shared.iterdir()) == ["cold", "fork", "fork-again"]
        mount = await store.acquire(target, "image-session")
        try:
            assert (mount / "log").read_text() == "cold\nfork\nfork-again\n"
            assert (mount / "log").stat().st_uid == 0  # on disk: "the session's user"
        finally:
            await store.release(target.runtime_id, "image-session")
    finally:
        await template.stop()
        await backend.cleanup_orphans()
        unmount_slots(base / "state")
        shutil.rmtree(base, ignore_errors=True)
