"""A cold start's readiness is signalled, not guessed: the supervisor says ``L`` on the ready pipe once the agent
listens, which wakes ``Sandbox.until_listening`` (the start-up /ping probe's wait between attempts).

Namespace sandboxes are skipped where they cannot run (a failure under HANGAR_REQUIRE_ISOLATION=1).
"""

from __future__ import annotations

import asyncio
import shutil
import socket
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from hangar.sandbox.base import SandboxBackend
from hangar.sandbox.selection import namespace_unsupported_reason
from hangar.sandbox.sock_diag import listening
from hangar.sessions.agent_http import AgentHttp
from hangar.sessions.probe import ping
from tests.sandbox.fixtures import AgentFiles, make_backend, started, world_readable_dir

NAMESPACE = namespace_unsupported_reason()
BOUND_S = 60.0  # a bound on a start that works, never a measurement


@pytest.fixture(scope="module")
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture(scope="module")
def state_root() -> Iterator[Path]:
    root = world_readable_dir("hangar-listening-")
    yield root
    shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(scope="module")
async def backend(state_root: Path) -> AsyncIterator[SandboxBackend]:
    if NAMESPACE is not None:
        pytest.skip(str(NAMESPACE))
    made = make_backend("namespace", state_root)
    yield made
    await made.cleanup_orphans()


def test_listening_reads_the_listen_table() -> None:
    """``listening`` sees a TCP listener on the port (v4 or v6) and nothing once it is closed."""
    for family, host in ((socket.AF_INET, "127.0.0.1"), (socket.AF_INET6, "::1")):
        server = socket.socket(family, socket.SOCK_STREAM)
        server.bind((host, 0))
        port = server.getsockname()[1]
        assert not listening(port)  # bound, not listening
        server.listen()
        assert listening(port)
        server.close()
        assert not listening(port)


@pytest.mark.anyio
async def test_a_cold_start_is_woken_when_its_agent_listens(backend: SandboxBackend, agent_files: AgentFiles) -> None:
    """``until_listening`` returns on the supervisor's word, long before its timeout, and then /ping answers at the
    first attempt; afterwards it is a plain sleep again (the pipe is closed)."""
    async with started(backend, agent_files.spec()) as sandbox:
        await asyncio.wait_for(sandbox.until_listening(10 * BOUND_S), BOUND_S)
        assert getattr(sandbox, "listened", False)  # woken by the supervisor's ``L``, not by the pipe's end
        client = AgentHttp(str(sandbox.socket_path))
        try:
            answer = await ping(client)
        finally:
            await client.aclose()
        assert answer is not None and answer.status == "Healthy"
        with pytest.raises(TimeoutError):  # nothing more to wake it: it waits out its timeout
            await asyncio.wait_for(sandbox.until_listening(10 * BOUND_S), 0.2)
