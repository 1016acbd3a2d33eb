"""The sandbox tests' agent (``agent_app.py``) started from async code, as AgentCore's streaming tutorial and
FastMCP start theirs: ``asyncio.run(main())`` awaiting ``uvicorn.Server(config).serve()``. Its warm template stops
where ``main.py`` enters that event loop, so the isolation tests can run against forks made from there too."""

from __future__ import annotations

import dataclasses
import shutil
from collections.abc import Iterator

from tests.sandbox.fixtures import HERE, AgentFiles, world_readable_dir

SYNC_START = 'if __name__ == "__main__":\n    uvicorn.run('


def async_variant(source: str) -> str:
    """``source`` (ending in ``uvicorn.run(app, ...)`` under the main guard) serving from ``asyncio.run`` instead."""
    head, guard, call = source.rpartition(SYNC_START)
    assert guard and call.rstrip().endswith(")"), "the agent does not end in uvicorn.run(...) under the main guard"
    args = call.rstrip()[:-1]
    return (
        f"{head}async def serve_from_asyncio() -> None:\n"
        f"    await uvicorn.Server(uvicorn.Config({args})).serve()\n\n\n"
        'if __name__ == "__main__":\n    import asyncio\n\n    asyncio.run(serve_from_asyncio())\n'
    )


def async_main_py() -> str:
    return async_variant((HERE / "agent_app.py").read_text())


def async_agent_files(files: AgentFiles) -> Iterator[AgentFiles]:
    """``files`` with a code dir of its own whose main.py serves from ``asyncio.run``."""
    code = world_readable_dir("hangar-test-async-code-")
    shutil.copytree(files.code_dir, code, dirs_exist_ok=True)
    (code / "main.py").write_text(async_main_py())
    (code / "main.py").chmod(0o644)
    yield dataclasses.replace(files, code_dir=code, specs=[])
    shutil.rmtree(code, ignore_errors=True)
