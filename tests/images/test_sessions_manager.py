"""Sessions of images through the real session manager and namespace backend: a version whose ``PreparedVersion``
carries an ``ImageConfig`` (the seam with image preparation) runs the image; sessions are cold and say why; an
entrypoint that never listens or exits at once is a clear error within the start timeout, never a hang."""

from __future__ import annotations

import asyncio
import json
import shutil
import tempfile
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import replace
from pathlib import Path

import pytest

from hangar.config import Settings
from hangar.domain.errors import RuntimeClientError
from hangar.domain.invocation import ImageConfig, InvocationTarget, PreparedVersion
from hangar.sandbox.selection import namespace_unsupported_reason
from hangar.sandbox.state import instance_tag
from hangar.sessions.images import IMAGE_COLD_REASON
from hangar.sessions.manager import SessionManager
from hangar.sessions.session import Session
from tests.sandbox.fixtures import world_readable_dir
from tests.support.agent_env import make_target
from tests.support.agents.image_rootfs import BUSYBOX_ARGV, BUSYBOX_PORT_ARGV, busybox_rootfs

pytestmark = pytest.mark.skipif(namespace_unsupported_reason() is not None, reason=str(namespace_unsupported_reason()))
SID = "image-session-000000000000000000000001"
SID2 = "image-session-000000000000000000000002"


@pytest.fixture(scope="module")
def rootfs() -> Iterator[Path]:
    base = world_readable_dir("hangar-test-image-")
    yield busybox_rootfs(base / "rootfs")
    shutil.rmtree(base, ignore_errors=True)


def image_target(
    rootfs: Path, argv: tuple[str, ...] = BUSYBOX_ARGV, protocol: str = "HTTP", **environment: str
) -> InvocationTarget:
    image = ImageConfig(
        rootfs=rootfs,
        manifest_digest="sha256:" + "ab" * 32,
        reference="127.0.0.1/busybox@sha256:" + "ab" * 32,
        architecture="amd64",
        cmd=argv,
        env=(("GREETING", "from-image"), ("FROM_RUNTIME", "image-default")),
        working_dir="/app",
        user="app",
    )
    base = make_target(
        rootfs, "testbed", runtime_id="imageagent-abcdefghij", protocol=protocol, environment=dict(environment)
    )
    prepared = PreparedVersion(rootfs, rootfs, ("image",), image.manifest_digest, image)
    return replace(base, prepared=prepared)


def run(scenario: Callable[[SessionManager], Awaitable[None]], tmp_path: Path, **settings: object) -> None:
    state_root = Path(tempfile.mkdtemp(prefix="hsm-", dir="/tmp"))

    async def main() -> None:
        from hangar.sandbox.namespace import NamespaceBackend

        config = Settings(data_dir=tmp_path / "data", egress="deny", **settings)  # type: ignore[arg-type]
        manager = SessionManager(config, NamespaceBackend(state_root=state_root, tag=instance_tag(state_root)))
        await manager.start()
        try:
            await scenario(manager)
        finally:
            await manager.stop()
        assert manager.live_sessions() == []

    try:
        asyncio.run(main())
    finally:
        shutil.rmtree(state_root, ignore_errors=True)


async def call(session: Session, payload: dict[str, object]) -> dict[str, object]:
    response = await session.client.request(
        "POST", session.target.path, [("content-type", "application/json")], json.dumps(payload).encode()
    )
    body = await response.read(1 << 20)
    await response.aclose()
    assert response.status_code == 200, body
    return json.loads(body)


def test_image_sessions_run_the_image_cold_and_say_why(rootfs: Path, tmp_path: Path) -> None:
    async def scenario(manager: SessionManager) -> None:
        target = image_target(rootfs, FROM_RUNTIME="runtime-wins")
        one = await manager.get_or_start(target, SID)
        two = await manager.get_or_start(target, SID2)
        assert (await call(one, {"a": 1}))["first"] == {"a": 1}
        assert (await call(two, {"b": 2}))["first"] == {"b": 2}
        answer = await call(one, {"c": 3})
        assert answer["first"] == {"a": 1}  # the session's own overlay
        assert answer["greeting"] == "from-image" and answer["runtime"] == "runtime-wins"  # runtime env on top
        assert answer["pwd"] == "/app"
        described = one.describe()
        assert described["startKind"] == "cold" and described["coldReason"] == IMAGE_COLD_REASON
        out = bytearray()
        async for event in one.sandbox.exec("cat /tmp/first; ls /", 10.0):
            out += event.data
        assert b'"a": 1' in out and b"srv" in out

    run(scenario, tmp_path)


def test_entrypoint_that_never_listens_is_a_clear_error(rootfs: Path, tmp_path: Path) -> None:
    async def scenario(manager: SessionManager) -> None:
        with pytest.raises(RuntimeClientError, match="did not answer /ping within 3s"):
            await manager.get_or_start(image_target(rootfs, ("/bin/sleep", "3600")), SID)
        assert manager.live_sessions() == []

    run(scenario, tmp_path, session_start_timeout_s=3.0)


def test_entrypoint_that_exits_is_a_clear_error(rootfs: Path, tmp_path: Path) -> None:
    async def scenario(manager: SessionManager) -> None:
        for argv in (("/bin/sh", "-c", "echo bye; exit 3"), ("/no/such/program",)):
            with pytest.raises(RuntimeClientError, match=r"exited|could not start"):
                await asyncio.wait_for(manager.get_or_start(image_target(rootfs, argv), SID), 60)
        assert manager.live_sessions() == []

    run(scenario, tmp_path, session_start_timeout_s=30.0)


def test_image_without_entrypoint_or_cmd_is_a_clear_error(rootfs: Path, tmp_path: Path) -> None:
    async def scenario(manager: SessionManager) -> None:
        with pytest.raises(RuntimeClientError, match="neither an Entrypoint nor a Cmd"):
            await manager.get_or_start(image_target(rootfs, ()), SID)

    run(scenario, tmp_path)


def test_a_nul_or_malformed_name_in_the_image_config_is_a_clear_error(rootfs: Path, tmp_path: Path) -> None:
    async def scenario(manager: SessionManager) -> None:
        target = image_target(rootfs)
        for env in ((("A", "x\0--bind\0/\0/h"),), (("A=B", "x"),), (("", "x"),)):
            image = replace(target.prepared.image, env=env)  # type: ignore[type-var]
            bad = replace(target, prepared=replace(target.prepared, image=image))
            with pytest.raises(RuntimeClientError, match="NUL character or a malformed name"):
                await manager.get_or_start(bad, SID)
        assert manager.live_sessions() == []

    run(scenario, tmp_path)


def test_a_warm_pool_serves_image_sessions(rootfs: Path, tmp_path: Path) -> None:
    async def scenario(manager: SessionManager) -> None:
        target = image_target(rootfs)
        first = await manager.get_or_start(target, SID)  # cold; the pool for this runtime fills beside it
        assert first.start_kind == "cold"
        deadline = asyncio.get_running_loop().time() + 60
        while manager.pool.count() < 1:  # the spare is an image sandbox, started by the pool
            assert asyncio.get_running_loop().time() < deadline
            await asyncio.sleep(0.1)
        second = await manager.get_or_start(target, SID2)
        assert second.start_kind == "warm"
        assert (await call(second, {"w": 1}))["first"] == {"w": 1}
        assert (await call(first, {"c": 1}))["first"] == {"c": 1}

    run(scenario, tmp_path, warm_pool_size=1)


def test_image_sessions_use_the_contract_port_of_their_protocol(rootfs: Path, tmp_path: Path) -> None:
    async def scenario(manager: SessionManager) -> None:
        for protocol, port, path in (("MCP", "8000", "/mcp"), ("A2A", "9000", "/")):
            target = replace(image_target(rootfs, BUSYBOX_PORT_ARGV, protocol=protocol), runtime_id=f"img{port}-x")
            session = await manager.get_or_start(target, SID)
            assert (target.port, target.path) == (int(port), path)
            assert (await call(session, {"protocol": protocol}))["body"] == {"protocol": protocol}
            out = bytearray()
            async for event in session.sandbox.exec("echo $PORT", 10.0):
                out += event.data
            assert out.decode().strip() == port

    run(scenario, tmp_path)
