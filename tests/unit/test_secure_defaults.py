"""``hangar serve`` is secure and honest by default, checked on the real command.

- Without an isolating backend it refuses to start, naming what is missing and how to install it.
- Running without isolation takes ``--sandbox process``, and then the start-up log and ``/healthz`` say so.
- A data dir that sandbox uids cannot reach (under a 0700 ``mktemp -d``) fails at start with the path and the fix,
  not at the first invoke; after ``chmod o+x`` the same command starts.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from hangar.sandbox.selection import namespace_unsupported_reason
from tests.support.server import HANGAR_BIN, HangarServer, free_port

REFUSAL_TIMEOUT_S = 60


def serve_until_exit(data_dir: Path, *args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """Run ``hangar serve`` expecting it to refuse (and so to exit by itself)."""
    argv = [str(HANGAR_BIN), "serve", "--port", str(free_port()), "--data-dir", str(data_dir), *args]
    return subprocess.run(
        argv, env={**os.environ, **(env or {})}, capture_output=True, text=True, timeout=REFUSAL_TIMEOUT_S, check=False
    )


@pytest.fixture
def closed_parent() -> Iterator[Path]:
    """What ``mktemp -d`` gives: a 0700 directory owned by this user."""
    path = Path(tempfile.mkdtemp(prefix="hangar-closed-"))
    assert path.stat().st_mode & 0o777 == 0o700
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def test_without_an_isolating_backend_serve_refuses_and_names_the_fix(tmp_path: Path) -> None:
    """A host without bubblewrap, as a fresh machine after ``make install`` alone (bwrap is hidden from PATH)."""
    bare_path = tmp_path / "bin"
    bare_path.mkdir()
    done = serve_until_exit(tmp_path / "data", env={"PATH": str(bare_path)})
    assert done.returncode == 2, done.stdout + done.stderr
    message = " ".join(done.stderr.split())
    assert "refusing to start" in message
    assert "cannot isolate sessions: missing bwrap (Debian package bubblewrap)" in message  # what is missing ...
    assert "apt-get install -y bubblewrap" in message  # ... the command that installs it ...
    assert "--sandbox process" in message  # ... and how to run without isolation knowingly
    assert not (tmp_path / "data" / "hangar.db").exists()  # refused before anything was created


def test_an_explicit_process_backend_says_at_start_and_in_healthz_that_it_does_not_isolate(tmp_path: Path) -> None:
    server = HangarServer(data_dir=tmp_path / "data", extra_args=["--sandbox", "process"]).start()
    try:
        health = httpx.get(f"{server.url}/healthz", timeout=10).json()
    finally:
        server.stop()
    assert health["sandbox"] == {"backend": "process", "isolates": False}
    assert health["isolation"] is False
    assert "NO ISOLATION" in health["warning"]
    log = server.log()
    assert "NO ISOLATION" in log
    assert "WARNING" in log


@pytest.mark.skipif(namespace_unsupported_reason() is not None, reason=str(namespace_unsupported_reason()))
def test_a_data_dir_under_a_closed_parent_fails_at_start_with_the_fix(closed_parent: Path) -> None:
    data_dir = closed_parent / "data"
    done = serve_until_exit(data_dir)
    assert done.returncode == 2, done.stdout + done.stderr
    message = " ".join(done.stderr.split())
    assert f"{closed_parent} (mode 0700" in message
    assert f"chmod o+x {closed_parent}" in message

    closed_parent.chmod(0o711)  # the fix the message names
    server = HangarServer(data_dir=data_dir).start()
    try:
        health = httpx.get(f"{server.url}/healthz", timeout=10).json()
    finally:
        server.stop()
    assert (health["sandbox"]["backend"], health["isolation"]) == ("namespace", True)
    assert "warning" not in health
    assert data_dir.stat().st_mode & 0o001  # Hangar made its own directory traversable


@pytest.mark.skipif(namespace_unsupported_reason() is not None, reason=str(namespace_unsupported_reason()))
def test_hangar_opens_its_own_closed_data_dir_to_traversal_only(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    data_dir.mkdir(mode=0o700)
    server = HangarServer(data_dir=data_dir).start()
    server.stop()
    assert data_dir.stat().st_mode & 0o777 == 0o701  # others may traverse, not list
