"""select_backend: the setting picks the backend; auto takes namespace exactly where the host supports it."""

from __future__ import annotations

import logging
import shutil
from pathlib import Path

import pytest

from hangar.config import Settings
from hangar.sandbox import select_backend
from hangar.sandbox.process import ProcessBackend
from hangar.sandbox.selection import SandboxUnavailableError, namespace_unsupported_reason
from tests.sandbox.fixtures import AgentFiles, started, wait_ping, world_readable_dir


def test_process_is_chosen_when_asked_and_admits_it_does_not_isolate(tmp_path: Path) -> None:
    backend = select_backend(Settings(data_dir=tmp_path, sandbox_backend="process"))
    assert isinstance(backend, ProcessBackend)
    assert (backend.name, backend.isolates) == ("process", False)


def test_auto_picks_namespace_where_the_host_supports_it_and_never_falls_back(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path, sandbox_backend="auto")
    if namespace_unsupported_reason() is None:
        backend = select_backend(settings)
        assert (backend.name, backend.isolates) == ("namespace", True)
    else:
        with pytest.raises(SandboxUnavailableError, match="--sandbox process"):
            select_backend(settings)


@pytest.mark.skipif(namespace_unsupported_reason() is not None, reason=str(namespace_unsupported_reason()))
def test_namespace_gets_the_installation_tag_and_egress_setting(tmp_path: Path) -> None:
    backend = select_backend(Settings(data_dir=tmp_path, sandbox_backend="namespace", egress="deny"))
    assert backend.name == "namespace"
    assert backend.egress == "deny"  # type: ignore[attr-defined]
    other = select_backend(Settings(data_dir=tmp_path / "other", sandbox_backend="namespace", egress="allow"))
    assert other.egress == "allow"  # type: ignore[attr-defined]
    assert other.tag != backend.tag  # type: ignore[attr-defined]  # two installations never clean up each other


@pytest.mark.anyio
async def test_process_backend_warns_loudly_at_every_start(
    agent_files: AgentFiles, caplog: pytest.LogCaptureFixture
) -> None:
    root = world_readable_dir("hangar-sel-")
    try:
        with caplog.at_level(logging.WARNING, logger="hangar.sandbox.process"):
            async with started(ProcessBackend(state_root=root), agent_files.spec()) as sandbox:
                await wait_ping(sandbox)
        assert any("NO ISOLATION" in r.getMessage() and r.levelno == logging.WARNING for r in caplog.records)
    finally:
        shutil.rmtree(root, ignore_errors=True)
