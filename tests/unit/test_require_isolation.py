"""``HANGAR_REQUIRE_ISOLATION=1`` turns an isolation test's skip into a failure; other skips stay skips.

Checked on a real test of the suite in a child pytest, on a host made to lack bubblewrap (PATH without it), which
is exactly how a CI machine without isolation would have passed the security suite by skipping it.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
ISOLATION_TEST = "tests/sandbox/test_selection.py::test_namespace_gets_the_installation_tag_and_egress_setting"
CHILD_TIMEOUT_S = 300


def child_pytest(tmp_path: Path, require: bool, *tests: str) -> subprocess.CompletedProcess[str]:
    bare = tmp_path / "bin"
    bare.mkdir(exist_ok=True)
    env = {key: value for key, value in os.environ.items() if key != "HANGAR_REQUIRE_ISOLATION"}
    env["PATH"] = str(bare)  # no bwrap, no setpriv: the namespace backend is unsupported in the child
    if require:
        env["HANGAR_REQUIRE_ISOLATION"] = "1"
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "-q",
            "-rs",
            "-p",
            "no:cacheprovider",
            f"--basetemp={tmp_path / 'child'}",
            *tests,
        ],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=CHILD_TIMEOUT_S,
        check=False,
    )


def test_without_the_switch_an_isolation_test_skips(tmp_path: Path) -> None:
    done = child_pytest(tmp_path, False, ISOLATION_TEST)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "1 skipped" in done.stdout


def test_with_the_switch_it_fails_with_the_reason(tmp_path: Path) -> None:
    done = child_pytest(tmp_path, True, ISOLATION_TEST)
    assert done.returncode == 1, done.stdout + done.stderr
    assert "1 error" in done.stdout  # a skipif skips in setup, so the failure is reported as a setup error
    assert "may not skip" in done.stdout
    assert "bwrap is not installed" in done.stdout or "needs root" in done.stdout  # the skip's own reason


def test_with_the_switch_other_skips_stay_skips(tmp_path: Path) -> None:
    probe = tmp_path / "test_other_skip.py"  # outside the isolation paths: a skip for a missing optional service
    probe.write_text("import pytest\n\ndef test_needs_a_service():\n    pytest.skip('no such service here')\n")
    done = child_pytest(tmp_path, True, str(probe), f"--rootdir={ROOT}", f"--confcutdir={ROOT}")
    assert done.returncode == 0, done.stdout + done.stderr
    assert "1 skipped" in done.stdout
