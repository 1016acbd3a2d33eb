"""Real builds with uv on Debian's python3.11: the environment, the SDK inside it, the cache, concurrency."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from hangar.artifacts.api import BuildError
from hangar.artifacts.builder import ArtifactBuilder
from hangar.config import Settings
from tests.artifacts.conftest import Artifacts

AGENT = """\
import six
from hangar.sdk import BedrockAgentCoreApp

print("six", six.__version__, "sdk", BedrockAgentCoreApp.__name__)
"""
NOBODY = 65534


@pytest.fixture(scope="module")
def shared() -> Iterator[Artifacts]:
    """One builder for the module, in a dir every uid can traverse: builds and uv's cache are reused."""
    with tempfile.TemporaryDirectory(prefix="hangar-builds-") as directory:
        Path(directory).chmod(0o755)
        yield Artifacts(ArtifactBuilder(Settings(data_dir=Path(directory) / "data")))


def test_build_installs_requirements_and_sdk_and_runs_as_an_unprivileged_uid(shared: Artifacts) -> None:
    shared.folder("six-agent", {"main.py": AGENT, "requirements.txt": "six==1.17.0\n"})
    prepared = shared.builder.prepare(shared.artifact("six-agent"))

    assert prepared.code_dir.name == "code" and prepared.env_dir.name == "env"
    assert prepared.code_dir.parent.name == prepared.content_hash
    assert (prepared.code_dir / "main.py").read_text() == AGENT
    site = next((prepared.env_dir / "lib").glob("python3.11/site-packages"))
    assert (site / "hangar" / "__init__.py").read_text() == ""
    assert (site / "hangar" / "sdk" / "__init__.py").is_file()
    assert list(site.glob("starlette-*.dist-info")) and list(site.glob("uvicorn-*.dist-info"))
    assert os.path.realpath(prepared.env_dir / "bin" / "python") == "/usr/bin/python3.11"
    # Sandboxes run agents as unprivileged uids: the environment must work for one, and be immutable to it.
    result = subprocess.run(
        prepared.command(), cwd=prepared.code_dir, user=NOBODY, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("six 1.17.0 sdk "), result.stdout
    for path in (prepared.code_dir, prepared.code_dir / "main.py", prepared.env_dir, site):
        mode = stat.S_IMODE(path.stat().st_mode)
        assert mode & 0o222 == 0, f"{path} is writable ({mode:o})"
        assert mode & 0o004, f"{path} is not world-readable ({mode:o})"
    metadata = json.loads((prepared.code_dir.parent / "build.json").read_text())
    assert metadata["runtime"] == "PYTHON_3_11" and metadata["requirements"] == "requirements.txt"


def test_identical_content_is_built_once(shared: Artifacts) -> None:
    files = {"main.py": AGENT, "requirements.txt": "six==1.17.0\n", "pkg/util.py": "X = 1\n"}
    shared.folder("six-agent", files)
    first = shared.builder.prepare(shared.artifact("six-agent"))
    built_at = json.loads((first.code_dir.parent / "build.json").read_text())["builtAt"]
    shared.zip("copies/same-code.zip", files)  # same content, other key, zipped (no folder entries): same hash
    again = shared.builder.prepare(shared.artifact("copies/same-code.zip"))
    assert again == first
    assert json.loads((again.code_dir.parent / "build.json").read_text())["builtAt"] == built_at
    shared.folder("six-agent-changed", {**files, "main.py": AGENT + "# changed\n"})
    assert shared.builder.prepare(shared.artifact("six-agent-changed")).content_hash != first.content_hash


def test_console_script_entry_point_is_checked_against_the_environment(shared: Artifacts) -> None:
    shared.folder("script-agent", {"main.py": "print('hi')\n"})
    prepared = shared.builder.prepare(shared.artifact("script-agent", entry=("uvicorn", "main.py")))
    assert prepared.command()[0] == str(prepared.env_dir / "bin" / "uvicorn")
    assert shared.builder.prepare(shared.artifact("script-agent", entry=("./main.py",))).code_dir == prepared.code_dir
    with pytest.raises(BuildError, match=r"neither a \.py file nor a console script"):
        shared.builder.prepare(shared.artifact("script-agent", entry=("no-such-tool", "main.py")))


def test_concurrent_builders_of_the_same_content_agree(shared: Artifacts) -> None:
    """Two builders (as two processes would be: separate locks) race; the atomic rename picks one build."""
    shared.folder("race-agent", {"main.py": "print('race')\n", "requirements.txt": "six==1.17.0\n"})
    settings = Settings(data_dir=shared.store.root.parent)
    builders = [ArtifactBuilder(settings), ArtifactBuilder(settings)]
    results: list[object] = [None, None]

    def run(index: int) -> None:
        try:
            results[index] = builders[index].prepare(shared.artifact("race-agent"))
        except BaseException as exc:  # surfaced by the assertion below
            results[index] = exc

    threads = [threading.Thread(target=run, args=(index,)) for index in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=300)
    assert results[0] == results[1], results
    versions = shared.builder.versions_dir
    assert not list(versions.glob(".build-*")), "a losing build was left behind"


def test_bad_requirements_fail_with_uv_output(artifacts: Artifacts) -> None:
    artifacts.folder("bad-reqs", {"main.py": "", "requirements.txt": "hangar-no-such-package-zq9==1.0\n"})
    with pytest.raises(BuildError) as failure:
        artifacts.builder.prepare(artifacts.artifact("bad-reqs"))
    assert "installing requirements.txt failed" in failure.value.reason
    assert "hangar-no-such-package-zq9" in failure.value.reason
    assert not list(artifacts.builder.versions_dir.iterdir()), "a failed build must leave nothing behind"


def test_pyproject_dependencies_and_the_agents_own_starlette_win(shared: Artifacts) -> None:
    """pyproject.toml works like requirements.txt; an SDK dependency the agent pins is not replaced."""
    pyproject = '[project]\nname = "agent"\nversion = "0"\ndependencies = ["six==1.17.0", "starlette==0.46.2"]\n'
    shared.folder("pyproject-agent", {"main.py": AGENT, "pyproject.toml": pyproject})
    prepared = shared.builder.prepare(shared.artifact("pyproject-agent"))
    site = next((prepared.env_dir / "lib").glob("python3.11/site-packages"))
    assert [p.name for p in site.glob("starlette-*.dist-info")] == ["starlette-0.46.2.dist-info"]
    assert list(site.glob("six-1.17.0.dist-info")) and list(site.glob("uvicorn-*.dist-info"))


def test_unreachable_index_falls_back_to_uvs_cache(shared: Artifacts, monkeypatch: pytest.MonkeyPatch) -> None:
    files = {"main.py": AGENT, "requirements.txt": "six==1.17.0\n"}
    shared.folder("online-agent", files)
    shared.builder.prepare(shared.artifact("online-agent"))  # fills uv's cache
    for variable in ("HTTPS_PROXY", "HTTP_PROXY", "ALL_PROXY", "https_proxy", "http_proxy", "all_proxy"):
        monkeypatch.setenv(variable, "http://127.0.0.1:9")  # nothing listens there: the index is unreachable
    monkeypatch.setenv("UV_HTTP_RETRIES", "0")  # uv passes through to the build: no 10 s of retries here
    monkeypatch.delenv("NO_PROXY", raising=False)
    monkeypatch.delenv("no_proxy", raising=False)
    shared.folder("offline-agent", {**files, "main.py": AGENT + "# built offline\n"})
    prepared = shared.builder.prepare(shared.artifact("offline-agent"))
    build_log = (prepared.code_dir.parent / "build.log").read_text()
    assert "trying uv's cache alone (--offline)" in build_log
    assert list((prepared.env_dir / "lib").glob("python3.11/site-packages/six-1.17.0.dist-info"))

    shared.folder("offline-missing", {"main.py": "", "requirements.txt": "hangar-no-such-package-zq9==1.0\n"})
    with pytest.raises(BuildError, match="unreachable, and uv's cache alone did not satisfy"):
        shared.builder.prepare(shared.artifact("offline-missing"))
