"""The README's tour, run as written: its shell blocks are read from README.md, so the test fails when it drifts.

The commands run in a fresh working directory that has the checkout's ``.venv`` and ``examples`` (as a clone has),
against a real ``hangar serve`` whose data dir is that directory's ``.hangar``, with ``HOME`` empty (no
``~/.aws/config`` supplies a region) and no ``AWS_*`` variable inherited. Two substitutions only, both forced by
running beside other servers: the server listens on a free port instead of 8780 (the URL in the commands is
rewritten, and the hangar CLI gets it through its documented ``HANGAR_ENDPOINT_URL``), and ``<ARN>`` becomes the
ARN that ``hangar deploy`` printed.

The ``aws`` on ``PATH`` is the aws CLI v1 that ``pip install awscli`` gives (the ``test`` extra): it reads only
``AWS_DEFAULT_REGION``. The aws CLI v2 cannot be installed here (it is on neither PyPI nor Debian's archive; AWS
ships it as its own bundle), so v2 is not run: the README exports both ``AWS_DEFAULT_REGION`` and ``AWS_REGION``,
which v2 reads too.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.server import HangarServer

ROOT = Path(__file__).resolve().parents[2]
README_URL = "http://127.0.0.1:8780"
COMMAND_TIMEOUT_S = 600


def tour_blocks(kind: str) -> list[str]:
    """The ``kind`` code blocks of the README's "A tour" section, in order."""
    readme = (ROOT / "README.md").read_text()
    section = readme.split("\n## A tour\n", 1)[1].split("\n## ", 1)[0]
    return re.findall(rf"```{kind}\n(.*?)```", section, flags=re.DOTALL)


@pytest.fixture(scope="module")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("tour")
    (path / ".venv").symlink_to(ROOT / ".venv")
    (path / "examples").symlink_to(ROOT / "examples")
    (path / "home").mkdir()
    return path


@pytest.fixture(scope="module")
def server(workdir: Path) -> Iterator[HangarServer]:
    hangar = HangarServer(data_dir=workdir / ".hangar").start()
    yield hangar
    hangar.stop()


def shell_env(workdir: Path, server: HangarServer) -> dict[str, str]:
    """A user's fresh shell: the venv's aws (v1) on PATH, nothing of AWS inherited, no ~/.aws."""
    env = {key: value for key, value in os.environ.items() if not key.startswith(("AWS_", "HANGAR_"))}
    env.update(
        PATH=f"{Path(sys.executable).parent}:{env.get('PATH', '/usr/bin:/bin')}",
        HOME=str(workdir / "home"),
        PWD=str(workdir),
        AWS_EC2_METADATA_DISABLED="true",  # no instance metadata lookup on a machine that is not EC2
        HANGAR_ENDPOINT_URL=server.url,
    )
    return env


def run(block: str, workdir: Path, env: dict[str, str]) -> str:
    done = subprocess.run(
        ["bash", "-euo", "pipefail", "-c", block],
        cwd=workdir,
        env=env,
        capture_output=True,
        text=True,
        timeout=COMMAND_TIMEOUT_S,
        check=False,
    )
    assert done.returncode == 0, f"README block failed:\n{block}\nstdout:\n{done.stdout}\nstderr:\n{done.stderr}"
    return done.stdout + done.stderr


def test_the_aws_cli_v1_is_what_runs() -> None:
    done = subprocess.run([str(Path(sys.executable).parent / "aws"), "--version"], capture_output=True, text=True)
    assert (done.stdout + done.stderr).startswith("aws-cli/1."), done.stdout + done.stderr


def test_the_tour_works_as_written(workdir: Path, server: HangarServer) -> None:
    hangar_block, aws_block = tour_blocks("bash")
    env = shell_env(workdir, server)

    deployed = run(hangar_block, workdir, env)
    arns = re.findall(r"arn:aws:bedrock-agentcore:[\w-]+:\d{12}:runtime/echo-\w+", deployed)
    assert arns, deployed
    assert '"prompt": "hi"' in deployed  # the invoke's answer echoes the payload

    run(aws_block.replace(README_URL, server.url).replace("<ARN>", arns[0]), workdir, env)
    assert json.loads((workdir / "out.json").read_text())["echo"] == {"prompt": "hi"}

    (python_block,) = tour_blocks("python")
    script = f"arn = {arns[0]!r}\n" + python_block.replace(README_URL, server.url)
    region_env = {**env, "AWS_SHARED_CREDENTIALS_FILE": str(workdir / ".hangar" / "credentials")}
    region_env.update(AWS_DEFAULT_REGION="us-west-2", AWS_REGION="us-west-2")  # as the aws block exported them
    printed = run(f"{sys.executable} - <<'EOF'\n{script}\nEOF", workdir, region_env)
    assert "hi" in printed
