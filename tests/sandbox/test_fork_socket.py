"""Who serves a session's agent socket: in a session forked from a template at ``uvicorn.run``, the agent's own
uvicorn (one hop less on every request); in a cold start, the supervisor's relay to the agent's TCP port.

Observed from the agent itself: the peer of the request it answers is nobody on a Unix socket, the relay's loopback
address over TCP.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from hangar.sandbox.selection import namespace_unsupported_reason
from tests.sandbox.fixtures import AgentFiles, client, namespace_backend, wait_ping

pytestmark = [
    pytest.mark.anyio,
    pytest.mark.skipif(namespace_unsupported_reason() is not None, reason=str(namespace_unsupported_reason())),
]

if namespace_unsupported_reason() is None:
    from hangar.sandbox.namespace.backend import NamespaceBackend


@pytest.fixture(scope="module")
def backend() -> Iterator[NamespaceBackend]:
    with namespace_backend("hangar-fork-socket-") as backend:
        yield backend


async def test_a_fork_serves_its_socket_itself_and_a_cold_start_relays(
    backend: NamespaceBackend, agent_files: AgentFiles
) -> None:
    template = await backend.start_template(agent_files.spec())
    try:
        fork = await backend.fork(template, agent_files.spec())
        try:
            assert (await wait_ping(fork)).status_code == 200
            async with client(fork) as http:
                assert (await http.get("/peer")).json() == {"client": None}
                answer = await http.post("/invocations", content=b'{"prompt": "hello"}')
                assert answer.json() == {"echo": '{"prompt": "hello"}'}
                streamed = await http.get("/stream", params={"bytes": str(3 << 20)})
                assert len(streamed.content) == 3 << 20
        finally:
            await fork.stop()
    finally:
        await template.stop()
    cold = await backend.start(agent_files.spec())
    try:
        assert (await wait_ping(cold)).status_code == 200
        async with client(cold) as http:
            assert (await http.get("/peer")).json()["client"][0] == "127.0.0.1"
    finally:
        await cold.stop()
