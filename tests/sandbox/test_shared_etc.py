"""A cold sandbox's own /etc files are written once per content and shared, read-only, by the sandboxes that have
that content (only a runtime's outbound names differ)."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from hangar.sandbox.namespace import rootfs
from hangar.sandbox.selection import namespace_unsupported_reason
from tests.sandbox.fixtures import AgentFiles, make_backend, run_exec, started, world_readable_dir


def test_the_same_content_is_one_directory_and_other_names_another(tmp_path: Path) -> None:
    plain = rootfs.shared_etc(tmp_path, ())
    assert rootfs.shared_etc(tmp_path, ()) == plain
    named = rootfs.shared_etc(tmp_path, ("identity.hangar.internal",))
    assert named != plain
    for made, names in ((plain, ()), (named, ("identity.hangar.internal",))):
        files = rootfs.etc_files(names)
        assert sorted(p.name for p in made.iterdir()) == sorted(files)
        assert all((made / name).read_text() == text for name, text in files.items())
        assert all((made / name).stat().st_mode & 0o777 == 0o644 for name in files)
    assert "127.0.0.1\tidentity.hangar.internal\n" in (named / "hosts").read_text()
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []  # nothing half-built left


@pytest.fixture
def state_root() -> Iterator[Path]:
    root = world_readable_dir("hangar-etc-")
    yield root
    shutil.rmtree(root, ignore_errors=True)


@pytest.mark.skipif(namespace_unsupported_reason() is not None, reason=str(namespace_unsupported_reason()))
@pytest.mark.anyio
async def test_two_cold_sandboxes_read_the_shared_files_and_cannot_write_them(
    state_root: Path, agent_files: AgentFiles
) -> None:
    backend = make_backend("namespace", state_root)
    script = "cat /etc/hostname /etc/passwd; echo x >> /etc/hosts 2>/dev/null && echo W'R'OTE; true"
    async with started(backend, agent_files.spec()) as one, started(backend, agent_files.spec()) as two:
        for sandbox in (one, two):
            out, err, code, _ = await run_exec(sandbox, script)
            assert code == 0, err
            text = out.decode()
            assert text.startswith(f"{rootfs.HOSTNAME}\n") and f"agent:x:{rootfs.SANDBOX_UID}:" in text
            assert "WROTE" not in text
            assert not (sandbox.state.path / "etc").exists()  # type: ignore[attr-defined]
    shared = list((state_root / ".etc").iterdir())
    assert len(shared) == 1 and (shared[0] / "hosts").read_text() == rootfs.etc_files(())["hosts"]
