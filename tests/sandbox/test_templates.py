"""Warm templates on the namespace backend: a forked session is a sandbox of its own, whatever it shares a past with.

One template of the test agent serves the module; the tests that refuse, kill, stop or orphan a template start their
own. Evidence is read from the host (``/proc/PID/status``, ``maps``, ``fd``, ``mem`` of every process in a sandbox's
cgroup) as well as from inside the sandboxes.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import os
import re
import shutil
import signal
import stat
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from hangar.sandbox.base import TemplateUnsafe
from hangar.sandbox.selection import namespace_unsupported_reason
from hangar.sandbox.state import list_states
from tests.sandbox.fixtures import (
    AgentFiles,
    client,
    eventually,
    forked,
    make_backend,
    namespace_backend,
    processes_with_env,
    run_exec,
    started_template,
    wait_ping,
    world_readable_dir,
)

pytestmark = [
    pytest.mark.anyio,
    pytest.mark.skipif(namespace_unsupported_reason() is not None, reason=str(namespace_unsupported_reason())),
]

if namespace_unsupported_reason() is None:
    from hangar.sandbox.namespace import network
    from hangar.sandbox.namespace.backend import NamespaceBackend, NamespaceSandbox
    from hangar.sandbox.namespace.cgroups import list_names
    from hangar.sandbox.namespace.templates import NamespaceTemplate

THREAD_AT_IMPORT = """
import os, threading, time
import uvicorn
from starlette.applications import Starlette

threading.Thread(target=time.sleep, args=(3600,), name="import-time-worker", daemon=True).start()
app = Starlette()
if __name__ == "__main__":
    uvicorn.run(app, host="0.0.0.0", port=int(os.environ["PORT"]))
"""
SHARED_MAP_AT_IMPORT = """
import mmap, os
import uvicorn
from starlette.applications import Starlette

SCRATCH = mmap.mmap(-1, 4096)  # anonymous and MAP_SHARED (Python's default): one region in every fork
app = Starlette()
if __name__ == "__main__":
    uvicorn.run(app, host="0.0.0.0", port=int(os.environ["PORT"]))
"""
HELPER_AT_IMPORT = """
import os, subprocess, sys
import uvicorn
from starlette.applications import Starlette
from starlette.responses import JSONResponse
from starlette.routing import Route

PROBE = '''
import os, time
seen = set()
while True:
    for pid in {int(p) for p in os.listdir("/proc") if p.isdigit()} - seen - {1, os.getpid(), os.getppid()}:
        seen.add(pid)
        try:
            os.kill(pid, 0)
            print("may-signal", pid, flush=True)
        except OSError as exc:
            print("denied", pid, exc.errno, flush=True)
    time.sleep(0.05)
'''
subprocess.Popen([sys.executable, "-c", PROBE], start_new_session=True)  # a helper process started at import
app = Starlette(routes=[Route("/ping", lambda request: JSONResponse({"status": "Healthy"}))])
if __name__ == "__main__":
    uvicorn.run(app, host="0.0.0.0", port=int(os.environ["PORT"]))
"""
# A shell function: run "$@" in a session of its own and return once it is (exec kills the command's group when
# the command ends; a process still on its way to setsid() would go with it).
DETACH = (
    'detach() { setsid "$@" </dev/null >/dev/null 2>&1 & p=$!; '
    'while [ "$(cut -d" " -f6 /proc/$p/stat)" != "$p" ]; do sleep 0.01; done; }'
)


@pytest.fixture(scope="module")
def anyio_backend() -> str:
    return "asyncio"  # one event loop for the module: its template (and the template's refill task) outlive a test


@pytest.fixture(scope="module")
def backend() -> Iterator[NamespaceBackend]:
    with namespace_backend("hangar-templates-", egress="allow") as backend:
        yield backend


@pytest.fixture(scope="module")
async def template(backend: NamespaceBackend, agent_files: AgentFiles) -> AsyncIterator[NamespaceTemplate]:
    async with started_template(backend, agent_files.spec()) as template:
        yield template


def code_dir_with(main_py: str) -> Path:
    code = world_readable_dir("hangar-template-code-")
    (code / "main.py").write_text(main_py)
    (code / "main.py").chmod(0o644)
    return code


async def sh(sandbox: NamespaceSandbox, command: str) -> str:
    out, err, code, _ = await run_exec(sandbox, command)
    assert code == 0, (command, err)
    return out.decode()


def ids(pid: int) -> tuple[set[int], set[int]]:
    """Real, effective, saved and filesystem uids, and the same gids, of a host process."""
    fields = dict(line.split(":", 1) for line in Path(f"/proc/{pid}/status").read_text().splitlines())
    return {int(v) for v in fields["Uid"].split()}, {int(v) for v in fields["Gid"].split()}


def running(pid: int | None) -> bool:
    if pid is None:
        return False
    try:
        return Path(f"/proc/{pid}/stat").read_bytes().rsplit(b")", 1)[1].split()[0] != b"Z"
    except (OSError, IndexError):
        return False


def channels(pids: list[int]) -> set[tuple[str, int, int]]:
    """What the processes could talk through: every socket, pipe or FIFO they hold, every regular file they hold
    open for writing, every writable MAP_SHARED region they map; by kernel identity (device, inode)."""
    found: set[tuple[str, int, int]] = set()
    for pid in pids:
        with contextlib.suppress(FileNotFoundError, ProcessLookupError):
            for fd in os.listdir(f"/proc/{pid}/fd"):
                with contextlib.suppress(FileNotFoundError):
                    info = os.stat(f"/proc/{pid}/fd/{fd}")
                    flags = Path(f"/proc/{pid}/fdinfo/{fd}").read_text().split("flags:")[1].split()[0]
                    writable = int(flags, 8) & os.O_ACCMODE != os.O_RDONLY
                    kind = stat.S_IFMT(info.st_mode)
                    if kind in (stat.S_IFSOCK, stat.S_IFIFO) or (kind == stat.S_IFREG and writable):
                        found.add(("fd", info.st_dev, info.st_ino))
            for line in Path(f"/proc/{pid}/maps").read_text().splitlines():
                fields = line.split(maxsplit=5)
                if fields[1].startswith("rw") and fields[1][3] == "s":
                    major, minor = (int(x, 16) for x in fields[3].split(":"))
                    found.add(("map", os.makedev(major, minor), int(fields[4])))
    return found


def memory_holds(pids: list[int], needle: bytes) -> list[int]:
    """The processes whose readable memory contains ``needle`` (root reads /proc/PID/mem)."""
    holders = []
    for pid in pids:
        with contextlib.suppress(FileNotFoundError, ProcessLookupError):
            regions = Path(f"/proc/{pid}/maps").read_text().splitlines()
            with open(f"/proc/{pid}/mem", "rb", buffering=0) as mem:
                for line in regions:
                    span, perms = line.split()[:2]
                    if not perms.startswith("r") or line.endswith(("[vvar]", "[vsyscall]", "[vvar_vclock]")):
                        continue
                    start, end = (int(x, 16) for x in span.split("-"))
                    with contextlib.suppress(OSError):
                        mem.seek(start)
                        if needle in mem.read(end - start):
                            holders.append(pid)
                            break
    return holders


async def test_a_fork_answers_ping_and_invocations(
    backend: NamespaceBackend, template: NamespaceTemplate, agent_files: AgentFiles
) -> None:
    forks = template.forks
    async with forked(backend, template, agent_files.spec()) as sandbox, client(sandbox) as http:
        assert (await http.get("/ping")).json() == {"status": "Healthy"}
        answer = await http.post("/invocations", content=b'{"prompt": "hello"}')
        assert (answer.status_code, answer.json()) == (200, {"echo": '{"prompt": "hello"}'})
        env = (await http.get("/env")).json()
        assert (env["uid"], env["cwd"], env["environ"]["HOME"]) == (1000, str(agent_files.code_dir), "/home/agent")
    assert template.forks == forks + 1 and template.alive()


async def test_each_fork_runs_as_its_own_host_uid(
    backend: NamespaceBackend, template: NamespaceTemplate, agent_files: AgentFiles
) -> None:
    """One fork takes the template's prepared spare, the other (other limits) is prepared on the spot."""
    other = dataclasses.replace(agent_files.spec(), limits=dataclasses.replace(agent_files.spec().limits, pids=40))
    async with (
        forked(backend, template, agent_files.spec()) as first,
        forked(backend, template, other) as second,
    ):
        assert len({template.uid, first.uid, second.uid}) == 3
        for sandbox in (first, second):
            pids = sandbox.cgroup.pids()
            assert len(pids) >= 2  # pid 1 (the supervisor) and the agent
            for pid in pids:
                assert ids(pid) == ({sandbox.uid}, {sandbox.uid}), pid  # not even a root helper in a fork's cgroup
            assert template.zygote_pid not in pids
        assert template.zygote_pid in template.cgroup.pids()
        assert ids(template.zygote_pid) == ({template.uid}, {template.uid})
        assert {uid for pid in template.cgroup.pids() for uid in ids(pid)[0]} <= {0, template.uid}  # 0: bwrap


async def test_two_forks_share_no_memory_files_or_channels(
    backend: NamespaceBackend, template: NamespaceTemplate, agent_files: AgentFiles
) -> None:
    secret = f"fork-secret-{uuid.uuid4().hex}"
    python = agent_files.env_dir / "bin" / "python"
    keep_a_pty = f"{python} -c 'import os, time; pty = os.openpty(); time.sleep(300)'"
    async with (
        forked(backend, template, agent_files.spec()) as writer,
        forked(backend, template, agent_files.spec()) as reader,
    ):
        await sh(
            writer,
            f'for f in /tmp/s "$HOME/s" /dev/shm/s; do printf {secret} > "$f"; done; '
            f"{DETACH}; detach env HANGAR_SECRET={secret} sleep 300; detach {keep_a_pty}",
        )
        async with client(writer) as http:
            assert (await http.post("/invocations", content=secret.encode())).json() == {"echo": secret}
        # Positive controls: the writer holds the secret in its files, environment and memory, and has a pty.
        assert await eventually(
            lambda: bool(set(processes_with_env(f"HANGAR_SECRET={secret}")) & set(writer.cgroup.pids()))
        )
        assert await eventually(lambda: "0" in os.listdir(f"/proc/{writer.proc.pid}/root/dev/pts"))
        assert (await sh(writer, 'cat /tmp/s "$HOME/s" /dev/shm/s')) == secret * 3
        assert memory_holds(writer.cgroup.pids(), secret.encode())

        # The reader: none of it (nothing the reader runs carries the secret, so its memory can be searched after).
        _, err, code, _ = await run_exec(reader, 'cat /tmp/s "$HOME/s" /dev/shm/s')
        assert code != 0 and err.decode().count("No such file or directory") == 3
        listing = await sh(reader, 'for d in /tmp "$HOME" /dev/shm /dev/pts; do ls -A "$d"; echo --; done')
        tmp, home, shm, pts, _ = (part.split() for part in listing.split("--"))
        assert set(tmp) == {p.relative_to("/tmp").parts[0] for p in (agent_files.env_dir, agent_files.code_dir)}
        assert (home, shm, pts) == ([], [], ["ptmx"])  # no pty of the writer's either
        environments = await sh(reader, "cat /proc/[0-9]*/environ /proc/[0-9]*/cmdline 2>/dev/null | tr '\\0' '\\n'")
        assert "PORT=8080" in environments and secret not in environments
        assert memory_holds(reader.cgroup.pids(), secret.encode()) == []
        assert memory_holds([template.zygote_pid], secret.encode()) == []

        # From the host: no socket, pipe, writable file or shared writable mapping in common.
        zygote = channels([template.zygote_pid])
        assert channels(writer.cgroup.pids()) & channels(reader.cgroup.pids()) == set()
        assert channels(writer.cgroup.pids()) & zygote == set()
        assert channels(reader.cgroup.pids()) & zygote == set()


async def test_a_fork_cannot_read_the_templates_home_or_tmp(
    backend: NamespaceBackend, template: NamespaceTemplate, agent_files: AgentFiles
) -> None:
    """A fork starts with a copy of what the import left there (taken when the template got ready), never with a
    view of the template's own directories: nothing put there since reaches it, through any path."""
    secret = f"template-secret-{uuid.uuid4().hex}"
    planted = [template.state.tmp / "planted", template.state.home / "planted"]
    for path in planted:  # world-readable, in the directories the template sees as /tmp and its home
        path.write_text(secret)
        path.chmod(0o644)
    try:
        async with forked(backend, template, agent_files.spec()) as sandbox:
            out, err, code, _ = await run_exec(sandbox, 'cat /tmp/planted "$HOME/planted" ../planted')
            assert code != 0 and secret.encode() not in out
            assert err.decode().count("No such file or directory") == 3
            assert "planted" not in await sh(sandbox, 'ls -A /tmp "$HOME" ..')
    finally:
        for path in planted:
            path.unlink()


async def test_a_template_whose_agent_starts_a_thread_at_import_is_refused(
    backend: NamespaceBackend, agent_files: AgentFiles
) -> None:
    code = code_dir_with(THREAD_AT_IMPORT)
    spec = dataclasses.replace(agent_files.spec(), code_dir=code)
    try:
        with pytest.raises(TemplateUnsafe, match="thread") as refused:
            await backend.start_template(spec)
        assert "import-time-worker" in str(refused.value)
    finally:
        shutil.rmtree(code, ignore_errors=True)
    assert_gone(backend, spec.sandbox_id)


async def test_a_template_whose_agent_maps_shared_memory_at_import_is_refused(
    backend: NamespaceBackend, agent_files: AgentFiles
) -> None:
    code = code_dir_with(SHARED_MAP_AT_IMPORT)
    spec = dataclasses.replace(agent_files.spec(), code_dir=code)
    try:
        with pytest.raises(TemplateUnsafe, match="shared writable memory"):
            await backend.start_template(spec)
    finally:
        shutil.rmtree(code, ignore_errors=True)
    assert_gone(backend, spec.sandbox_id)


async def test_nothing_left_in_the_template_can_signal_a_forked_session(
    backend: NamespaceBackend, agent_files: AgentFiles
) -> None:
    """Either a template whose agent leaves a process running at import is refused (as it is now), or that process
    (its probe tries ``kill(pid, 0)`` on each pid of the template's pid namespace) is denied a forked session.

    Refusing is what keeps sessions safe here: each session's user namespace is created by the template's child,
    so the template's uid owns it and holds every capability in it, CAP_KILL included, and the template's pid
    namespace holds every fork's. A helper left running as that uid could signal every session of the version."""
    code = code_dir_with(HELPER_AT_IMPORT)
    try:
        try:
            template = await backend.start_template(dataclasses.replace(agent_files.spec(), code_dir=code))
        except TemplateUnsafe:
            return
        assert isinstance(template, NamespaceTemplate)
        try:
            async with forked(backend, template, dataclasses.replace(agent_files.spec(), code_dir=code)) as sandbox:
                agent = max(sandbox.cgroup.pids())  # any process of the session would do: the newest
                nspid = Path(f"/proc/{agent}/status").read_text().split("NSpid:")[1].split("\n")[0].split()
                verdict = re.compile(rf"^(may-signal|denied) {nspid[1]}\b", re.M)  # its pid in the template's view
                assert await eventually(lambda: verdict.search(template.state.log.read_text()) is not None, 10)
                found = verdict.search(template.state.log.read_text())
                assert found is not None and found.group(1) == "denied", found.group(0) if found else None
        finally:
            await template.cgroup.kill_all()  # the helper would keep the template's pid 1 (and so stop) waiting
            await template.stop()
    finally:
        shutil.rmtree(code, ignore_errors=True)


async def test_an_entry_point_that_is_not_a_script_is_refused(
    backend: NamespaceBackend, agent_files: AgentFiles
) -> None:
    python = str(agent_files.env_dir / "bin" / "python")
    spec = dataclasses.replace(agent_files.spec(), command=(python, "-m", "uvicorn", "main:app", "--port", "8080"))
    with pytest.raises(TemplateUnsafe, match="not a Python script"):
        await backend.start_template(spec)
    assert_gone(backend, spec.sandbox_id)


def assert_gone(backend: NamespaceBackend, sandbox_id: str) -> None:
    assert not (backend.state_root / sandbox_id).exists()
    assert all(not path.exists() for path in backend.cgroup(sandbox_id).unique_paths())
    assert sandbox_id not in backend.leases.owned().values()


async def test_killing_the_zygote_leaves_its_forks_serving(backend: NamespaceBackend, agent_files: AgentFiles) -> None:
    template = await backend.start_template(agent_files.spec())
    assert isinstance(template, NamespaceTemplate) and template.zygote_pid is not None
    try:
        async with forked(backend, template, agent_files.spec()) as sandbox:
            os.kill(template.zygote_pid, signal.SIGKILL)
            assert await eventually(lambda: not template.alive())
            assert template.describe()["alive"] is False
            assert sandbox.alive()
            async with client(sandbox) as http:
                assert (await http.get("/ping")).status_code == 200
                assert (await http.post("/invocations", content=b"still here")).json() == {"echo": "still here"}
    finally:
        await template.stop()
    assert not template.state.path.exists()


async def test_stop_returns_after_the_last_fork_ended_and_removes_the_template(
    backend: NamespaceBackend, agent_files: AgentFiles
) -> None:
    template = await backend.start_template(agent_files.spec())
    assert isinstance(template, NamespaceTemplate)
    sandbox = await backend.fork(template, agent_files.spec())
    try:
        await wait_ping(sandbox)
        session_alive_when_stopped: list[bool] = []
        stopping = asyncio.create_task(template.stop())
        stopping.add_done_callback(lambda _: session_alive_when_stopped.append(sandbox.alive()))
        assert await eventually(lambda: not running(template.zygote_pid))  # retired at once
        assert not template.alive()
        assert (await wait_ping(sandbox)).status_code == 200  # the session goes on
        assert not stopping.done() and template.proc.poll() is None
    finally:
        await sandbox.stop()
    await asyncio.wait_for(stopping, 60)
    assert session_alive_when_stopped == [False]
    assert template.proc.poll() is not None
    assert all(not path.exists() for path in template.cgroup.unique_paths())
    assert not template.state.path.exists()
    assert template.uid not in backend.leases.owned()


async def test_cleanup_orphans_removes_a_template_and_its_forks(agent_files: AgentFiles) -> None:
    root = world_readable_dir("hangar-templates-orphans-")
    crashed = make_backend("namespace", root)
    assert isinstance(crashed, NamespaceBackend)
    template = await crashed.start_template(agent_files.spec())
    assert isinstance(template, NamespaceTemplate)
    sandboxes: list[NamespaceSandbox] = []
    try:
        for spec in (agent_files.spec(), dataclasses.replace(agent_files.spec(), environment={"OTHER": "1"})):
            sandbox = await crashed.fork(template, spec)
            await wait_ping(sandbox)
            sandboxes.append(sandbox)
        if template.refill is not None:  # its next fork is being prepared: let that finish, it is left behind too
            await template.refill
        pids = [template.zygote_pid, template.proc.pid] + [p for s in sandboxes for p in s.cgroup.pids()]
        assert all(running(pid) for pid in pids)
        prefix = f"hangar-{crashed.tag}-"

        # A new Hangar process on the same state root knows none of them.
        fresh = make_backend("namespace", root)
        assert await fresh.cleanup_orphans() >= 1 + len(sandboxes)
        assert list_states(root) == []
        assert list_names(crashed.layout, prefix) == []
        assert fresh.leases.owned() == {}
        assert await eventually(lambda: not any(running(pid) for pid in pids))
        assert not template.alive() and not any(s.alive() for s in sandboxes)
    finally:
        for sandbox in sandboxes:
            await sandbox.stop()
        await template.stop()
        await make_backend("namespace", root).cleanup_orphans()
        shutil.rmtree(root, ignore_errors=True)


async def test_a_public_fork_gets_its_own_network_removed_on_stop(
    backend: NamespaceBackend, agent_files: AgentFiles
) -> None:
    public = agent_files.spec(network="public")
    template = await backend.start_template(public)
    assert isinstance(template, NamespaceTemplate)
    try:
        async with forked(backend, template, agent_files.spec(network="public")) as sandbox:
            link = sandbox.link
            assert link is not None and (network.NETNS_DIR / link.netns).exists()
            addresses = await sh(sandbox, "ip -o -4 addr show")
            assert re.search(rf"\beth0\s+inet {re.escape(link.sandbox_ip)}/{link.prefix}\b", addresses), addresses
            assert set(re.findall(r"^\d+: (\S+)", addresses, re.M)) == {"lo", "eth0"}
            route = await sh(sandbox, "ip -4 route show default")
            assert f"via {link.host_ip} dev eth0" in route
        assert not (network.NETNS_DIR / link.netns).exists()
        await backend.settle()  # the kernel removes the veth with its netns, after the stop
        assert not Path("/sys/class/net", link.host_if).exists()
    finally:
        await template.stop()
    assert network.list_netns(f"hangar-{backend.tag}-") == []  # its prepared fork's netns went with it
