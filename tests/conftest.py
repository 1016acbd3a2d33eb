"""Shared fixtures and suite-wide rules.

- A real ``hangar serve`` on loopback per test module (``hangar``).
- Temporary directories that sandbox uids can traverse: pytest's own root (``/tmp/pytest-of-<user>``) is 0700 and
  ``hangar serve`` rightly refuses a data dir below it, so the suite's base temp is a fresh ``/tmp/hangar-pytest-*``
  and every directory the factory makes is 0711 (traverse only). A test that needs a closed parent makes its own.
- ``HANGAR_REQUIRE_ISOLATION=1`` (CI): a security or isolation test that would skip FAILS with the skip's reason, so
  a host without isolation can never pass the security suite by skipping it. Other skips stay skips.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
import time
from collections.abc import Generator, Iterator
from pathlib import Path

import pytest

from tests.support.server import HangarServer

REQUIRE_ISOLATION = os.environ.get("HANGAR_REQUIRE_ISOLATION", "") not in ("", "0")
# Forked spares (spares=auto, the default) make a version's second session a claim ("warm") as soon as its spare is
# ready: a race for tests that assert "fork" or count forks. They are off here; tests/sessions/test_spares.py and the
# attacker suite turn them on.
os.environ.setdefault("HANGAR_SPARES", "off")
# Where a skip means "this host did not check isolation": tests of the sandbox, of its security, of the backend
# contract, the data-plane tests of warm templates (a namespace-only feature), the sandboxes' identity channel,
# image sessions and hostile images (and the registry clients that push them), per-session limits, and the
# console in a real browser (where its sign-in is shown to keep the secret out of the browser).
ISOLATION_TESTS = (
    "tests/sandbox/",
    "tests/security/",
    "tests/contract/",
    "tests/identity/",
    "tests/images/",
    "tests/sdk/test_identity_in_session.py",
    "tests/protocols/test_fork_starts.py",
    "tests/protocols/test_async_fork.py",
    "tests/protocols/test_agent_to_agent.py",
    "tests/sessions/test_lifecycle_limits.py",
    "tests/sessions/test_session_storage.py",
    "tests/sessions/test_spares.py",
    "tests/sessions/test_spares_short.py",
    "tests/dataplane/test_templates.py",
    "tests/dataplane/test_protocols.py",
    "tests/dataplane/test_shells.py",
    "tests/observability/test_metrics.py",
    "tests/observability/test_logs_cli_v2.py",  # the aws CLI v2 (Debian's awscli) must be there in CI
    "tests/observability/test_session_start_spans.py",
    "tests/observability/test_traces_real_receiver.py",  # Phoenix (make test-deps) must be there in CI
    "tests/unit/test_secure_defaults.py",
    "tests/faults/test_crash.py",
    "tests/faults/test_disk_full.py",
    "tests/console/test_console_browser.py",
    "tests/cluster/",  # Ray (the cluster extra), root and PostgreSQL must be there in CI
)
# Skips that say nothing about this host's isolation (the code under test does not exist on the platform).
PLATFORM_SKIPS = ("the i386 ABI exists on x86_64 only", "the host has no cgroup2 mount")
_OWN_BASETEMP = pytest.StashKey[Path]()
BASETEMP_PREFIX = "hangar-pytest-"
KEEP_FAILED_RUN_S = 24 * 3600


@pytest.hookimpl(tryfirst=True)
def pytest_configure(config: pytest.Config) -> None:
    if config.option.basetemp is None:
        _prune_old_failed_runs()
        root = Path(tempfile.mkdtemp(prefix=BASETEMP_PREFIX))
        root.chmod(0o711)
        config.option.basetemp = str(root / "t")
        config.stash[_OWN_BASETEMP] = root


def _prune_old_failed_runs() -> None:
    """A failed run keeps its temp dir for a day (server logs are in it); older ones go."""
    cutoff = time.time() - KEEP_FAILED_RUN_S
    for old in Path(tempfile.gettempdir()).glob(f"{BASETEMP_PREFIX}*"):
        with contextlib.suppress(OSError):
            if old.stat().st_mtime < cutoff:
                shutil.rmtree(old, ignore_errors=True)


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """Remove the base temp of a green run; a failed run keeps it for a look at the servers' logs."""
    root = session.config.stash.get(_OWN_BASETEMP, None)
    if root is not None and exitstatus == 0:
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(scope="session", autouse=True)
def _traversable_temp_dirs(tmp_path_factory: pytest.TempPathFactory) -> None:
    tmp_path_factory.getbasetemp().chmod(0o711)
    make = tmp_path_factory.mktemp

    def mktemp(basename: str, numbered: bool = True) -> Path:
        path = make(basename, numbered)
        path.chmod(0o711)
        return path

    tmp_path_factory.mktemp = mktemp  # type: ignore[method-assign]  # tmp_path and every fixture go through it


def _is_isolation_test(nodeid: str) -> bool:
    return nodeid.startswith(ISOLATION_TESTS)


def _skip_reason(longrepr: object) -> str:
    if isinstance(longrepr, tuple) and len(longrepr) == 3:
        return str(longrepr[2]).removeprefix("Skipped: ")
    return str(longrepr)


def _must_not_skip(nodeid: str, reason: str) -> bool:
    return REQUIRE_ISOLATION and _is_isolation_test(nodeid) and reason not in PLATFORM_SKIPS


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Generator[None, object, object]:
    report = yield
    assert isinstance(report, pytest.TestReport)
    if report.skipped and not hasattr(report, "wasxfail"):
        reason = _skip_reason(report.longrepr)
        if _must_not_skip(item.nodeid, reason):
            report.outcome = "failed"
            report.longrepr = f"HANGAR_REQUIRE_ISOLATION=1: this security/isolation test may not skip: {reason}"
    return report


@pytest.hookimpl(wrapper=True)
def pytest_make_collect_report(collector: pytest.Collector) -> Generator[None, object, object]:
    """A whole module skipped at import (``importorskip``) is held to the same rule."""
    report = yield
    assert isinstance(report, pytest.CollectReport)
    if report.skipped:
        reason = _skip_reason(report.longrepr)
        if _must_not_skip(collector.nodeid, reason):
            report.outcome = "failed"
            report.longrepr = f"HANGAR_REQUIRE_ISOLATION=1: this security/isolation module may not skip: {reason}"
    return report


@pytest.fixture(scope="module")
def hangar(tmp_path_factory: pytest.TempPathFactory) -> Iterator[HangarServer]:
    server = HangarServer(data_dir=tmp_path_factory.mktemp("hangar") / "data").start()
    yield server
    server.stop()


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    return tmp_path / "data"
