"""One contract, every real backend: start, reach through the socket, env, exec, stats, stop, orphan cleanup."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import os
import shutil
import signal
import subprocess
import sys
import textwrap
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from hangar.domain.errors import HangarError, RuntimeClientError
from hangar.sandbox.base import SandboxBackend
from tests.sandbox.fixtures import (
    AgentFiles,
    client,
    encode_spec,
    eventually,
    make_backend,
    processes_with_env,
    run_exec,
    started,
    wait_ping,
    world_readable_dir,
)
from tests.sandbox.hosts import available_backends

pytestmark = pytest.mark.anyio
REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(params=available_backends())
def backend_name(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def state_root(backend_name: str) -> Iterator[Path]:
    root = world_readable_dir("hangar-ct-")
    yield root
    # Safety net for a failed test: a fresh backend treats everything left as an orphan.
    asyncio.run(make_backend(backend_name, root).cleanup_orphans())
    shutil.rmtree(root, ignore_errors=True)


@pytest.fixture
def backend(backend_name: str, state_root: Path) -> SandboxBackend:
    return make_backend(backend_name, state_root)


async def test_agent_answers_through_the_socket(backend: SandboxBackend, agent_files: AgentFiles) -> None:
    async with started(backend, agent_files.spec()) as sandbox:
        assert sandbox.alive()
        assert sandbox.socket_path.is_socket()
        ping = await wait_ping(sandbox)
        assert ping.status_code == 200
        assert ping.json() == {"status": "Healthy"}
        async with client(sandbox) as http:
            answer = await http.post("/invocations", content=b'{"prompt": "hello"}')
            assert answer.json() == {"echo": '{"prompt": "hello"}'}
            size = 3 * 1024 * 1024 + 17
            received = 0
            async with http.stream("GET", f"/stream?bytes={size}") as response:
                async for chunk in response.aiter_raw():
                    received += len(chunk)
            assert received == size

            async def body() -> AsyncIterator[bytes]:
                for _ in range(128):
                    yield b"y" * 65536

            uploaded = await http.post("/upload", content=body())
            assert uploaded.json() == {"received": 128 * 65536}


@pytest.fixture(scope="module")
def echo_example(agent_files: AgentFiles) -> Iterator[Path]:
    """examples/echo with hangar.sdk beside it, as the artifacts builder would lay out a version."""
    code = world_readable_dir("hangar-test-echo-")
    shutil.copy(REPO / "examples" / "echo" / "main.py", code / "main.py")
    shutil.copytree(
        REPO / "src" / "hangar" / "sdk", code / "hangar" / "sdk", ignore=shutil.ignore_patterns("__pycache__")
    )
    (code / "hangar" / "__init__.py").write_text("")
    subprocess.run(["chmod", "-R", "a+rX", str(code)], check=True, timeout=30)
    yield code
    shutil.rmtree(code, ignore_errors=True)


async def test_the_echo_example_runs_on_the_sdk(
    backend: SandboxBackend, agent_files: AgentFiles, echo_example: Path
) -> None:
    spec = dataclasses.replace(agent_files.spec(), code_dir=echo_example)
    async with started(backend, spec) as sandbox:
        assert (await wait_ping(sandbox)).status_code == 200
        async with client(sandbox) as http:
            answer = await http.post(
                "/invocations",
                json={"prompt": "hi"},
                headers={"X-Amzn-Bedrock-AgentCore-Runtime-Session-Id": "s" * 33},
            )
        assert answer.json() == {"echo": {"prompt": "hi"}, "session_id": "s" * 33}


async def test_environment_and_working_directory(backend: SandboxBackend, agent_files: AgentFiles) -> None:
    os.environ["HANGAR_TEST_HOST_SECRET"] = "must-not-leak"
    try:
        spec = agent_files.spec(environment={"MY_SETTING": "42", "PORT": "1"})
        async with started(backend, spec) as sandbox:
            await wait_ping(sandbox)
            async with client(sandbox) as http:
                seen = (await http.get("/env")).json()
    finally:
        del os.environ["HANGAR_TEST_HOST_SECRET"]
    environ = seen["environ"]
    assert environ["MY_SETTING"] == "42"
    assert environ["HANGAR_SANDBOX"] == "1"
    assert environ["DOCKER_CONTAINER"] == "1"
    assert environ["PORT"] != "1"  # the backend owns PORT: the agent must listen where the relay connects
    assert "HANGAR_TEST_HOST_SECRET" not in environ
    assert seen["cwd"] == str(agent_files.code_dir)
    home, tmp = Path(environ["HOME"]), Path(environ["TMPDIR"])
    assert home != tmp


async def test_exec_streams_output_and_exit_code(backend: SandboxBackend, agent_files: AgentFiles) -> None:
    async with started(backend, agent_files.spec(environment={"GREETING": "hi"})) as sandbox:
        out, err, code, timed_out = await run_exec(sandbox, 'echo "$GREETING from $PWD"; echo oops >&2; exit 3')
        assert out == f"hi from {agent_files.code_dir}\n".encode()
        assert err == b"oops\n"
        assert (code, timed_out) == (3, False)
        big, _, code, _ = await run_exec(sandbox, "head -c 1000000 /dev/zero")
        assert (len(big), code) == (1000000, 0)


async def test_exec_of_a_command_no_argv_can_carry_ends_with_an_error(
    backend: SandboxBackend, agent_files: AgentFiles
) -> None:
    """NUL or a lone surrogate cannot reach /bin/sh: the stream ends with a message and exit 2 (it used to hang)."""
    async with started(backend, agent_files.spec()) as sandbox:
        for command in ("echo \x00hi", "echo \ud800"):
            out, err, code, timed_out = await asyncio.wait_for(run_exec(sandbox, command, 5.0), 30)
            assert (out, code, timed_out) == (b"", 2, False)
            assert b"cannot be run" in err
        assert sandbox.alive()


async def test_exec_timeout_kills_the_command_group(backend: SandboxBackend, agent_files: AgentFiles) -> None:
    marker = f"HANGAR_EXEC_MARK={uuid.uuid4().hex}"
    async with started(backend, agent_files.spec()) as sandbox:
        out, _, _, timed_out = await run_exec(sandbox, f"export {marker}; sleep 300 & sleep 301 & echo started", 1.0)
        assert out == b"started\n"
        assert timed_out
        # Both sleeps shared the command's process group, so the timeout took them too (bounded wait: reaping).
        assert await eventually(lambda: not processes_with_env(marker))
        assert sandbox.alive()


async def test_exec_caller_hanging_up_ends_the_command(backend: SandboxBackend, agent_files: AgentFiles) -> None:
    marker = f"HANGAR_HANGUP_MARK={uuid.uuid4().hex}"
    async with started(backend, agent_files.spec()) as sandbox:
        events = sandbox.exec(f"export {marker}; echo started; sleep 300", 120.0)
        first = await anext(events)
        assert (first.kind, first.data) == ("stdout", b"started\n")
        assert await eventually(lambda: processes_with_env(marker))
        await events.aclose()  # the gateway's client went away
        assert await eventually(lambda: not processes_with_env(marker))


async def test_concurrent_commands_and_stop_during_one(backend: SandboxBackend, agent_files: AgentFiles) -> None:
    async with started(backend, agent_files.spec()) as sandbox:
        results = await asyncio.gather(*(run_exec(sandbox, f"sleep 0.2; echo {n}") for n in range(3)))
        assert [r[0] for r in results] == [b"0\n", b"1\n", b"2\n"]
        events = sandbox.exec("echo begun; sleep 300", 120.0)
        assert (await anext(events)).data == b"begun\n"
        stopping = asyncio.ensure_future(sandbox.stop())
        # The sandbox ends under the command: the caller is told (a killed exit, or the sandbox's end), never hung.
        try:
            last = await asyncio.wait_for(anext(events), 30)
            assert last.kind == "exit" and last.exit_code is not None and last.exit_code < 0
        except RuntimeClientError:
            pass
        await stopping
        await events.aclose()


async def test_alive_reports_the_agents_death(backend: SandboxBackend, agent_files: AgentFiles) -> None:
    async with started(backend, agent_files.spec()) as sandbox:
        await wait_ping(sandbox)
        async with client(sandbox) as http:
            agent_pid = (await http.get("/env")).json()["pid"]
        # The sandbox may end before this command can report: that is the point.
        with contextlib.suppress(RuntimeClientError):
            await run_exec(sandbox, f"kill -9 {agent_pid}")
        assert await eventually(lambda: not sandbox.alive())


async def test_stats_report_the_tree(backend: SandboxBackend, agent_files: AgentFiles) -> None:
    async with started(backend, agent_files.spec()) as sandbox:
        await wait_ping(sandbox)
        stats = await sandbox.stats()
        assert stats.pids >= 2  # supervisor and agent
        assert stats.memory_bytes > 10 * 1024 * 1024  # a Python with starlette and uvicorn imported
        assert stats.cpu_seconds > 0


async def test_stop_kills_the_tree_and_deletes_files(backend: SandboxBackend, agent_files: AgentFiles) -> None:
    marker = f"HANGAR_STOP_MARK={uuid.uuid4().hex}"
    key, value = marker.split("=")
    sandbox = await backend.start(agent_files.spec(environment={key: value}))
    try:
        await wait_ping(sandbox)
        out, _, code, _ = await run_exec(sandbox, 'echo data > "$HOME/kept" && ls "$HOME"')
        assert (out, code) == (b"kept\n", 0)
        assert len(processes_with_env(marker)) >= 2
        state_dir = sandbox.socket_path.parent.parent
        assert state_dir.is_dir()
    finally:
        await sandbox.stop()
    assert not sandbox.alive()
    assert processes_with_env(marker) == []
    assert not state_dir.exists()
    await sandbox.stop()  # idempotent


async def test_two_sandboxes_run_side_by_side(backend: SandboxBackend, agent_files: AgentFiles) -> None:
    async with started(backend, agent_files.spec()) as first, started(backend, agent_files.spec()) as second:
        assert first.socket_path != second.socket_path
        assert (await wait_ping(first)).status_code == 200
        assert (await wait_ping(second)).status_code == 200
        async with client(first) as a, client(second) as b:
            env_a = (await a.get("/env")).json()["environ"]
            env_b = (await b.get("/env")).json()["environ"]
        assert env_a["HOME"] != env_b["HOME"] or backend.isolates


async def test_concurrent_starts_and_stops(backend: SandboxBackend, agent_files: AgentFiles) -> None:
    sandboxes = await asyncio.gather(*(backend.start(agent_files.spec()) for _ in range(4)))
    try:
        assert len({s.socket_path for s in sandboxes}) == 4
        answers = await asyncio.gather(*(wait_ping(s) for s in sandboxes))
        assert [a.status_code for a in answers] == [200] * 4
    finally:
        await asyncio.gather(*(s.stop() for s in sandboxes))
    assert not any(s.alive() for s in sandboxes)
    assert not any(s.socket_path.parent.parent.exists() for s in sandboxes)


async def test_a_failed_launch_raises_and_leaves_nothing(
    backend: SandboxBackend, agent_files: AgentFiles, state_root: Path
) -> None:
    spec = dataclasses.replace(agent_files.spec(), command=(str(agent_files.env_dir / "bin" / "no-such-agent"),))
    with pytest.raises(HangarError, match="no-such-agent"):
        await backend.start(spec)
    assert [p for p in state_root.iterdir() if p.name.startswith("t-")] == []
    assert await make_backend(backend.name, state_root).cleanup_orphans() == 0  # no cgroup, netns or lease left


async def test_start_rejects_a_bad_id(backend: SandboxBackend, agent_files: AgentFiles) -> None:
    spec = agent_files.spec()
    bad = type(spec)(**{**spec.__dict__, "sandbox_id": "../escape"})
    with pytest.raises(ValueError):
        await backend.start(bad)


CRASHING_HOLDER = textwrap.dedent(
    """
    import asyncio, json, sys
    sys.path[:0] = [{repo!r}, {src!r}]
    from pathlib import Path
    from tests.sandbox.fixtures import decode_spec, make_backend

    async def main():
        backend = make_backend({name!r}, Path({root!r}))
        for spec in map(decode_spec, json.loads(sys.argv[1])):
            await backend.start(spec)
        print("started", flush=True)
        await asyncio.sleep(600)

    asyncio.run(main())
    """
)


async def test_cleanup_orphans_after_a_crash(backend_name: str, state_root: Path, agent_files: AgentFiles) -> None:
    marker = f"HANGAR_ORPHAN_MARK={uuid.uuid4().hex}"
    key, value = marker.split("=")
    specs = [agent_files.spec(environment={key: value}) for _ in range(2)]
    encoded = json.dumps([encode_spec(s) for s in specs])
    script = CRASHING_HOLDER.format(repo=str(REPO), src=str(REPO / "src"), name=backend_name, root=str(state_root))
    holder = subprocess.Popen(
        [sys.executable, "-c", script, encoded],
        stdout=subprocess.PIPE,
    )
    try:
        assert holder.stdout is not None
        line = await asyncio.wait_for(asyncio.to_thread(holder.stdout.readline), 60)
        assert line == b"started\n"
        # start() returns once the supervisor listens and has started its agent: two supervisors, two agents.
        assert await eventually(lambda: len(processes_with_env(marker)) >= 4)
    finally:
        holder.send_signal(signal.SIGKILL)  # the crash: no stop() ever runs
        holder.wait(timeout=10)
    # process sandboxes outlive their holder; namespace ones die with it (bwrap --die-with-parent); the files,
    # cgroups and uid leases of both stay behind until cleanup.
    assert len([p for p in state_root.iterdir() if p.name.startswith("t-")]) == 2
    fresh = make_backend(backend_name, state_root)
    assert await fresh.cleanup_orphans() == 2
    assert processes_with_env(marker) == []
    assert [p for p in state_root.iterdir() if p.name.startswith("t-")] == []
    assert await fresh.cleanup_orphans() == 0
