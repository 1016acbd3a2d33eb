"""Forks made ahead of a request (a warm pool's spares: ``sandbox.ahead.AHEAD``) leave the template's prepared fork
to a session that found no spare, and are isolated like every fork: their own uid, cgroup and sandbox."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator

import pytest

from hangar.sandbox.ahead import AHEAD
from hangar.sandbox.selection import namespace_unsupported_reason
from tests.sandbox.fixtures import (
    AgentFiles,
    eventually,
    namespace_backend,
    started_template,
    wait_ping,
)

pytestmark = [
    pytest.mark.anyio,
    pytest.mark.skipif(namespace_unsupported_reason() is not None, reason=str(namespace_unsupported_reason())),
]

if namespace_unsupported_reason() is None:
    from hangar.sandbox.namespace.backend import NamespaceBackend, NamespaceSandbox
    from hangar.sandbox.namespace.templates import NamespaceTemplate


@pytest.fixture(scope="module")
def anyio_backend() -> str:
    return "asyncio"  # one event loop for the module: its template (and the template's refill task) outlive a test


@pytest.fixture(scope="module")
def backend() -> Iterator[NamespaceBackend]:
    with namespace_backend("hangar-templates-ahead-") as backend:
        yield backend


@pytest.fixture(scope="module")
async def template(backend: NamespaceBackend, agent_files: AgentFiles) -> AsyncIterator[NamespaceTemplate]:
    async with started_template(backend, agent_files.spec()) as template:
        yield template


async def _fork_ahead(
    backend: NamespaceBackend, template: NamespaceTemplate, agent_files: AgentFiles
) -> NamespaceSandbox:
    """A fork as the warm pool makes a spare: in a task of its own with ``AHEAD`` set."""
    AHEAD.set(True)
    sandbox = await backend.fork(template, agent_files.spec())
    assert isinstance(sandbox, NamespaceSandbox)
    return sandbox


async def test_a_spare_forks_its_own_and_the_prepared_fork_waits_for_a_request(
    backend: NamespaceBackend, template: NamespaceTemplate, agent_files: AgentFiles
) -> None:
    assert await eventually(lambda: template.prepared is not None, timeout=60), "no fork was prepared"
    kept = template.prepared
    assert kept is not None
    taken = dict(template.taken)
    spare = await asyncio.create_task(_fork_ahead(backend, template, agent_files))
    try:
        assert template.prepared is kept and spare.id != kept.spec.sandbox_id
        assert template.taken == {**taken, "inline": taken["inline"] + 1}
        assert not AHEAD.get()  # the spare's task had a context of its own
        session = await backend.fork(template, agent_files.spec())
        try:
            assert session.id == kept.spec.sandbox_id  # the request took the fork prepared ahead
            assert template.taken == {"prepared": taken["prepared"] + 1, "inline": taken["inline"] + 1}
            for sandbox in (spare, session):
                assert (await wait_ping(sandbox)).status_code == 200
            assert len({template.uid, spare.uid, session.uid}) == 3
            assert not set(spare.cgroup.pids()) & set(session.cgroup.pids())
            assert template.zygote_pid not in {*spare.cgroup.pids(), *session.cgroup.pids()}
        finally:
            await session.stop()
    finally:
        await spare.stop()
    assert template.alive() and template.describe()["forksTaken"] == template.taken
