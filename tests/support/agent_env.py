"""Build a real agent environment for session and data-plane tests (no control plane needed).

``build_agent_env`` makes a uv virtualenv on Debian's Python 3.11 with starlette + uvicorn and a copy of
``hangar.sdk``, like the artifact builder does; ``make_target`` points an ``InvocationTarget`` at it.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from hangar.domain.invocation import PROTOCOL_DEFAULTS, InvocationTarget, PreparedVersion

ROOT = Path(__file__).resolve().parents[2]
AGENTS = Path(__file__).resolve().parent / "agents"
EXAMPLES = ROOT / "examples"
UV = Path(sys.executable).parent / "uv"
PYTHON = "/usr/bin/python3.11"


def build_agent_env(env_dir: Path) -> Path:
    """A venv with the SDK's dependencies and ``hangar.sdk`` itself; takes a few seconds with a warm uv cache."""
    subprocess.run([str(UV), "venv", "--quiet", "--python", PYTHON, str(env_dir)], check=True)
    subprocess.run(
        [str(UV), "pip", "install", "--quiet", "--python", str(env_dir / "bin" / "python"), "starlette", "uvicorn"],
        check=True,
    )
    site = next((env_dir / "lib").glob("python3*/site-packages"))
    (site / "hangar").mkdir()
    (site / "hangar" / "__init__.py").write_text("")
    shutil.copytree(
        ROOT / "src" / "hangar" / "sdk", site / "hangar" / "sdk", ignore=shutil.ignore_patterns("__pycache__")
    )
    return env_dir


def shared_agent_env() -> Path:
    """One env per SDK content, reused across test packages and runs (built atomically under the temp dir)."""
    digest = hashlib.sha256(PYTHON.encode())
    sdk = ROOT / "src" / "hangar" / "sdk"
    for path in sorted(sdk.rglob("*.py")):
        digest.update(path.relative_to(sdk).as_posix().encode() + b"\0" + path.read_bytes())
    final = Path(tempfile.gettempdir()) / f"hangar-test-agent-env-{digest.hexdigest()[:16]}"
    if (final / "bin" / "python").exists():
        return final
    building = Path(tempfile.mkdtemp(prefix="hangar-test-agent-env-build-"))
    shutil.rmtree(building)
    build_agent_env(building)
    try:
        os.rename(building, final)
    except OSError:  # another test process won the race
        shutil.rmtree(building, ignore_errors=True)
    return final


def agent_code(name: str) -> Path:
    """A test agent from tests/support/agents/, or an example from examples/."""
    candidate = AGENTS / name
    return candidate if candidate.is_dir() else EXAMPLES / name


def make_target(
    env_dir: Path,
    agent: str,
    *,
    runtime_id: str = "testagent-abcdefghij",
    version: str = "1",
    protocol: str = "HTTP",
    idle_timeout_s: int = 900,
    max_lifetime_s: int = 28800,
    header_allowlist: tuple[str, ...] = (),
    environment: dict[str, str] | None = None,
    account_id: str = "123456789012",
) -> InvocationTarget:
    port, path = PROTOCOL_DEFAULTS[protocol]
    name = runtime_id.rsplit("-", 1)[0]
    return InvocationTarget(
        account_id=account_id,
        runtime_id=runtime_id,
        runtime_arn=f"arn:aws:bedrock-agentcore:us-west-2:{account_id}:runtime/{runtime_id}",
        runtime_name=name,
        endpoint_name="DEFAULT",
        version=version,
        protocol=protocol,  # type: ignore[arg-type]
        port=port,
        path=path,
        network_mode="PUBLIC",
        idle_timeout_s=idle_timeout_s,
        max_lifetime_s=max_lifetime_s,
        prepared=PreparedVersion(
            code_dir=agent_code(agent),
            env_dir=env_dir,
            entry_point=("main.py",),
            content_hash=f"test-{agent}",
        ),
        environment=environment or {},
        header_allowlist=header_allowlist,
    )
