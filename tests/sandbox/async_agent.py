"""The sandbox tests' agent (``agent_app.py``) started from async code, as AgentCore's streaming tutorial and
FastMCP start theirs: ``asyncio.run(main())`` awaiting ``uvicorn.Server(config).serve()``. Its warm template stops
where ``main.py`` enters that event loop, so the isolation tests can run against forks made from there too."""

from __future__ import annotations

import dataclasses
import shutil
from collections.abc import Iterator

from tests.sandbox.fixtures import HERE, AgentFiles, world_readable_dir

SYNC_START = (
    'if __name__ == "__main__":\n'
    '    uvicorn.run(app, host="0.0.0.0", port=int(os.environ["PORT"]), log_level="warning")\n'
)
ASYNC_START = """

async def main() -> None:
    config = uvicorn.Config(app, host="0.0.0.0", port=int(os.environ["PORT"]), log_level="warning")
    await uvicorn.Server(config).serve()


if __name__ == "__main__":
    import asyncio

    asyncio.run(main())
"""


def async_main_py() -> str:
    source = (HERE / "agent_app.py").read_text()
    assert source.endswith(SYNC_START), "agent_app.py's start changed: update tests/sandbox/async_agent.py"
    return source.removesuffix(SYNC_START) + ASYNC_START


def async_agent_files(files: AgentFiles) -> Iterator[AgentFiles]:
    """``files`` with a code dir of its own whose main.py serves from ``asyncio.run``."""
    code = world_readable_dir("hangar-test-async-code-")
    shutil.copytree(files.code_dir, code, dirs_exist_ok=True)
    (code / "main.py").write_text(async_main_py())
    (code / "main.py").chmod(0o644)
    yield dataclasses.replace(files, code_dir=code, specs=[])
    shutil.rmtree(code, ignore_errors=True)
