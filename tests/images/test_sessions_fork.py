"""Sessions of a Python image start by fork from a warm template that runs on the image's own interpreter; each fork
switches to a root of its own (the host's overlay of the image, lower ID-mapped to the fork's lease, upper on the
fork's tmpfs), so forks never share a writable layer with the template or with each other. The attacker suite's moves
(``test_sessions_attacks.py``) are made again from forked sessions. Images that cannot fork start cold and say why."""

from __future__ import annotations

import asyncio
import json
import shutil
import tempfile
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from hangar.domain.invocation import ImageConfig
from hangar.sandbox.base import SandboxSpec
from hangar.sandbox.selection import namespace_unsupported_reason
from hangar.sandbox.state import instance_tag
from hangar.sessions.images import IMAGE_COLD_REASON, image_cold_reason
from tests.images import test_sessions_attacks as attacks
from tests.sandbox.fixtures import client, run_exec, wait_ping, world_readable_dir
from tests.support.agents.image_rootfs import (
    APP_GID,
    APP_UID,
    BUSYBOX_ARGV,
    SDK_PACKAGES,
    distributions,
    python_rootfs,
)

pytestmark = [
    pytest.mark.anyio,
    pytest.mark.skipif(namespace_unsupported_reason() is not None, reason=str(namespace_unsupported_reason())),
]

if namespace_unsupported_reason() is None:
    from hangar.sandbox.namespace.backend import NamespaceBackend, NamespaceSandbox
    from hangar.sandbox.namespace.templates import NamespaceTemplate

AGENT = """
import json, os, sys
import uvicorn
from starlette.applications import Starlette
from starlette.responses import JSONResponse
from starlette.routing import Route

with open("/tmp/imported", "w") as marker:  # import-time write in the template's own root
    marker.write(str(os.getpid()))


async def ping(request):
    return JSONResponse({"status": "Healthy"})


async def invocations(request):
    body = await request.json()
    if not os.path.exists("/tmp/first"):
        with open("/tmp/first", "w") as first:
            first.write(json.dumps(body))
    with open("/tmp/first") as first:
        seen = json.loads(first.read())
    facts = {"python": sys.executable, "version": list(sys.version_info[:2]), "uid": os.getuid(), "gid": os.getgid()}
    facts.update(cwd=os.getcwd(), first=seen, imported=os.path.exists("/tmp/imported"), home=os.environ.get("HOME"))
    return JSONResponse(facts)


app = Starlette(routes=[Route("/ping", ping), Route("/invocations", invocations, methods=["POST"])])
if __name__ == "__main__":
    uvicorn.run(app, host="0.0.0.0", port=int(os.environ["PORT"]))
"""
AGENT_ARGV = ("python3", "/app/main.py")
# Import-time code owns the template's root: it tries to move the stage its forks attach their roots on, and to
# swap Hangar's directory for its own; then it serves the same app.
TAMPER = """
import errno, os
tried = {}
for name, move in (("stage", lambda: os.rename("/.hangar-stage", "/moved-stage")),
                   ("rmdir", lambda: os.rmdir("/.hangar-stage")),
                   ("hangar", lambda: os.rename("/.hangar", "/moved-hangar"))):
    try:
        move()
        tried[name] = "done"
    except OSError as exc:
        tried[name] = errno.errorcode[exc.errno]
if tried["hangar"] == "done":
    os.makedirs("/.hangar/usr")
with open("/tmp/tampered", "w") as out:
    out.write(repr(tried))
exec(open("/app/main.py").read())
"""
SDK_AGENT = Path(__file__).parent.parent / "support" / "agents" / "imagesdk" / "agent.py"
PACKAGES = ("starlette", "uvicorn", "anyio", "sniffio", "idna", "h11", "click", "typing_extensions")


@pytest.fixture(scope="module")
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture(scope="module")
def image() -> Iterator[Path]:
    """Debian's python3 with starlette, uvicorn and the bedrock-agentcore SDK, busybox, and two agents: a plain
    Starlette one at /app/main.py and the quick start's SDK agent at /app/agent.py."""
    base = world_readable_dir("hangar-test-forkimage-")
    root = python_rootfs(base / "rootfs", distributions(*{*PACKAGES, *SDK_PACKAGES}))
    (root / "app" / "main.py").write_text(AGENT)
    (root / "app" / "main.py").chmod(0o644)
    shutil.copy(SDK_AGENT, root / "app" / "agent.py")  # the real bedrock-agentcore SDK agent of the quick start
    (root / "app" / "agent.py").chmod(0o644)
    (root / "app" / "tamper.py").write_text(TAMPER)
    (root / "app" / "tamper.py").chmod(0o644)
    yield root
    shutil.rmtree(base, ignore_errors=True)


class Templates:
    """One warm template per distinct environment (a version's template has its version's environment)."""

    def __init__(self, backend: NamespaceBackend, image: Path) -> None:
        self.backend = backend
        self.image = image
        self.started: dict[tuple[tuple[str, str], ...], NamespaceTemplate] = {}

    async def of(self, spec: SandboxSpec) -> NamespaceTemplate:
        key = tuple(sorted(spec.environment.items()))
        if key not in self.started:
            template = await self.backend.start_template(replace(spec, sandbox_id=f"ht-{uuid.uuid4().hex[:12]}"))
            assert isinstance(template, NamespaceTemplate)
            self.started[key] = template
        return self.started[key]

    @asynccontextmanager
    async def forked(self, backend: Any, sandbox_spec: SandboxSpec) -> AsyncIterator[NamespaceSandbox]:
        """``attacks.started`` as a fork: the same spec, the image's Python agent as its entry point, and a sandbox
        id of its own (two forks of one spec would otherwise share one whenever the template's prepared fork is not
        ready yet: a state-dir clash CI once hit under load)."""
        spec = replace(
            sandbox_spec,
            sandbox_id=f"a-{uuid.uuid4().hex[:12]}",
            command=AGENT_ARGV,
            rootfs=self.image,
            code_dir=self.image,
            env_dir=self.image,
        )
        sandbox = await self.backend.fork(await self.of(spec), spec)
        try:
            yield sandbox
        finally:
            await sandbox.stop()


@pytest.fixture(scope="module")
async def templates(image: Path) -> AsyncIterator[Templates]:
    """Async and module-scoped so that the module's tests share one event loop: a template outlives a test, and its
    refill task and fork lock belong to the loop that made them (per-test loops once failed a fork with "Lock is
    bound to a different event loop")."""
    root = Path(tempfile.mkdtemp(prefix="hsf-", dir="/tmp"))  # short: socket paths must fit in 108 bytes
    root.chmod(0o755)
    found = Templates(NamespaceBackend(state_root=root, tag=instance_tag(root)), image)
    yield found
    await asyncio.gather(*(template.stop() for template in found.started.values()))
    await NamespaceBackend(state_root=root, tag=instance_tag(root)).cleanup_orphans()
    shutil.rmtree(root, ignore_errors=True)


async def invoke(sandbox: NamespaceSandbox, payload: object) -> dict[str, Any]:
    async with client(sandbox) as http:
        response = await http.post("/invocations", content=json.dumps(payload))
    assert response.status_code == 200, response.text
    return response.json()


async def test_forks_run_the_images_python_each_in_a_root_of_its_own(templates: Templates, image: Path) -> None:
    spec = attacks.spec(image)
    async with templates.forked(None, spec) as one, templates.forked(None, spec) as two:
        await asyncio.gather(wait_ping(one), wait_ping(two))
        template = await templates.of(replace(spec, command=AGENT_ARGV))
        assert template.forks >= 2 and template.alive()
        a, b = await invoke(one, {"n": 1}), await invoke(two, {"n": 2})
        for answer in (a, b):
            assert answer["python"] == "/usr/bin/python3" and answer["version"] == [3, 11]  # the image's own
            assert (answer["uid"], answer["gid"], answer["cwd"]) == (APP_UID, APP_GID, "/app")
            assert answer["home"] == "/home/app"
            assert answer["imported"] is False  # the template's import-time files are not in a fork's root
        assert (a["first"], b["first"]) == ({"n": 1}, {"n": 2})
        assert (await invoke(one, {"n": 3}))["first"] == {"n": 1}  # state kept within the session
        out, err, code, _ = await run_exec(one, "echo one > /top-one; echo x > /app/mine; cat /proc/self/uid_map")
        assert code == 0, err
        assert out.decode().split() == [str(APP_UID), str(one.uid), "1"]  # only the image's uid, onto the lease
        out, _, code, _ = await run_exec(two, "ls -A / /app; cat /tmp/first")
        assert b"top-one" not in out and b"mine" not in out and b'"n": 2' in out
        assert (one.state.path / "root" / "top-one").read_text() == "one\n"  # its own upper, on the host
        assert (one.state.rw / "upper" / "top-one").stat().st_uid == one.uid
        assert not (two.state.rw / "upper" / "top-one").exists()
        assert not (template.state.rw / "upper" / "top-one").exists()  # nor the template's
        assert (template.state.rw / "upper" / "tmp" / "imported").exists()  # which its import did write to
        for sandbox in (one, two):
            for pid in sandbox.cgroup.pids():
                status = Path(f"/proc/{pid}/status").read_text()
                uid_line = next(line for line in status.splitlines() if line.startswith("Uid:"))
                assert uid_line.split()[1:] == [str(sandbox.uid)] * 4
    assert not (image / "top-one").exists() and not (image / "app" / "mine").exists()


async def test_the_bedrock_agentcore_sdk_agent_forks(templates: Templates, image: Path) -> None:
    spec = replace(attacks.spec(image), environment={"AGENT_VERSION": "7"})
    sdk = replace(spec, command=("python3", "/app/agent.py"))
    template = await templates.backend.start_template(replace(sdk, sandbox_id=f"ht-{uuid.uuid4().hex[:12]}"))
    try:
        one = await templates.backend.fork(template, replace(sdk, sandbox_id=f"a-{uuid.uuid4().hex[:12]}"))
        two = await templates.backend.fork(template, replace(sdk, sandbox_id=f"a-{uuid.uuid4().hex[:12]}"))
        try:
            await asyncio.gather(wait_ping(one), wait_ping(two))
            assert (await invoke(one, {"prompt": "a"}))["turns"] == ["a"]
            assert (await invoke(two, {"prompt": "b"}))["turns"] == ["b"]
            answer = await invoke(one, {"prompt": "c"})
            assert answer["turns"] == ["a", "c"] and answer["version"] == "7"
            assert (answer["python"], answer["uid"], answer["cwd"]) == ("/usr/bin/python3", APP_UID, "/app")
            assert template.forks == 2
        finally:
            await asyncio.gather(one.stop(), two.stop())
    finally:
        await template.stop()


async def test_import_time_code_cannot_redirect_a_forks_root(templates: Templates, image: Path) -> None:
    spec = replace(attacks.spec(image, user=""), command=("python3", "/app/tamper.py"))  # even as the image's root
    template = await templates.backend.start_template(replace(spec, sandbox_id=f"ht-{uuid.uuid4().hex[:12]}"))
    try:
        assert isinstance(template, NamespaceTemplate)
        tried = (template.state.rw / "upper" / "tmp" / "tampered").read_text()
        assert tried == "{'stage': 'EBUSY', 'rmdir': 'EBUSY', 'hangar': 'EBUSY'}"  # mount points stay put
        fork = await templates.backend.fork(template, replace(spec, sandbox_id=f"a-{uuid.uuid4().hex[:12]}"))
        try:
            await wait_ping(fork)
            answer = await invoke(fork, {"n": 1})
            assert answer["uid"] == 0 and answer["imported"] is False  # its own root, not the template's
            out, _, code, _ = await run_exec(fork, "ls -A / /.hangar; ls /.hangar/usr/bin/python3.11; ls /tmp")
            assert code == 0 and b"moved" not in out and b"tampered" not in out
        finally:
            await fork.stop()
    finally:
        await template.stop()


async def test_a_fork_has_none_of_the_templates_programs_or_mounts(templates: Templates, image: Path) -> None:
    async with templates.forked(None, attacks.spec(image)) as one:
        await wait_ping(one)
        out, _, code, _ = await run_exec(one, "ls -A /.hangar; grep -c . /proc/self/mounts; cat /proc/self/mounts")
        assert code == 0
        lines = out.decode().split()
        assert lines[:4] == ["commands.py", "sock_diag.py", "supervisor.py", "usr"]  # no isolate.py, zygote.py, stage
        mounts = out.decode()
        template = await templates.of(replace(attacks.spec(image), command=AGENT_ARGV))
        assert str(one.state.path) in mounts  # its own overlay (the options name its layers, as for cold sessions)
        assert str(template.state.path) not in mounts and " /work" not in mounts  # nothing of the template's root


@pytest.mark.parametrize(
    "move",
    [
        "test_cannot_read_a_neighbours_or_the_hosts_files",
        "test_secrets_never_show_in_host_command_lines",
        "test_cannot_see_signal_or_trace_a_neighbours_processes",
        "test_cannot_reach_the_host_or_its_services",
        "test_cannot_mount_unshare_or_load_modules",
        "test_fork_bomb_stops_at_the_pids_limit",
        "test_memory_bomb_is_killed_inside_its_cgroup",
        "test_filling_the_disk_stops_at_the_size_limit",
        "test_planted_symlinks_and_stop_do_not_reach_the_host",
        "test_a_double_forked_daemon_dies_with_stop",
    ],
)
async def test_the_attackers_moves_from_a_forked_image_session(
    templates: Templates, image: Path, move: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(attacks, "started", templates.forked)
    before = sum(template.forks for template in templates.started.values())
    await getattr(attacks, move)(templates.backend, image)
    assert sum(template.forks for template in templates.started.values()) > before  # the moves ran in forks


def image_config(rootfs: Path, argv: tuple[str, ...]) -> ImageConfig:
    return ImageConfig(
        rootfs=rootfs,
        manifest_digest="sha256:" + "cd" * 32,
        reference="127.0.0.1/forks@sha256:" + "cd" * 32,
        architecture="amd64",
        cmd=argv,
        env=(),
        working_dir="/app",
        user="app",
    )


def test_images_that_cannot_fork_say_why(image: Path, tmp_path: Path) -> None:
    assert image_cold_reason(image_config(image, AGENT_ARGV)) is None
    assert image_cold_reason(image_config(image, ("/usr/bin/python3.11", "/app/main.py"))) is None
    assert image_cold_reason(image_config(image, BUSYBOX_ARGV)) == IMAGE_COLD_REASON  # not Python
    assert image_cold_reason(image_config(image, ("python3", "-m", "app"))) == IMAGE_COLD_REASON  # not a script
    old = tmp_path / "old"
    (old / "usr" / "bin").mkdir(parents=True)
    (old / "usr" / "bin" / "python3.9").write_bytes(b"\x7fELF")
    (old / "usr" / "bin" / "python3").symlink_to("python3.9")
    reason = image_cold_reason(image_config(old, AGENT_ARGV))
    assert reason == "image sessions start cold: the image's Python is 3.9; forks need 3.11 or later"
    none = tmp_path / "none"
    (none / "usr" / "bin").mkdir(parents=True)
    (none / "usr" / "bin" / "python3").symlink_to("/usr/bin/python3.11")  # the host's: never looked at
    reason = image_cold_reason(image_config(none, AGENT_ARGV))
    assert reason == "image sessions start cold: the image has no python3 to run a warm template on"
