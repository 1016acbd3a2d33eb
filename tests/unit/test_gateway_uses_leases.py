"""The gateway uses sessions only through the call lease (``sessions/calls.py``): the session manager stays the one
owner of Active/Idle, and no handler reaches past it into the sandbox. Checked with ``ast`` over every module of
``src/hangar/gateway``, so a new handler cannot quietly slip back to the old calls."""

from __future__ import annotations

import ast
from pathlib import Path

SRC = Path(__file__).resolve().parents[2] / "src" / "hangar"
FORBIDDEN_ATTRIBUTES = {"sandbox", "begin", "finish", "_begin", "_finish", "inflight"}
FORBIDDEN_PREFIX = ("agent_failed", "_agent_failed")


def offences(path: Path, root: Path = SRC) -> list[str]:
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if not isinstance(node, ast.Attribute):
            continue
        name = node.attr
        receiver = ast.unparse(node.value)
        if name in {"begin", "finish"} and receiver in {"body", "self", "engine", "tracing"}:
            continue  # other things' begin/finish (a spooled body's, a SQL engine's, a trace's)
        if name in FORBIDDEN_ATTRIBUTES or name.startswith(FORBIDDEN_PREFIX):
            found.append(f"{path.relative_to(root)}:{node.lineno}: {receiver}.{name}")
    return sorted(found)


def test_gateway_never_touches_session_bookkeeping_or_the_sandbox() -> None:
    modules = sorted((SRC / "gateway").rglob("*.py"))
    assert len(modules) > 10  # the walk found the gateway
    assert [o for path in modules for o in offences(path)] == []


def test_the_check_catches_what_it_forbids(tmp_path: Path) -> None:
    sample = tmp_path / "handler.py"
    sample.write_text(
        "async def h(manager, session, body):\n"
        "    session.begin()\n"
        "    session.sandbox.exec('x', 1)\n"
        "    await manager.agent_failed(session)\n"
        "    manager.agent_failed_later(session)\n"
        "    await body.finish()\n"
    )
    assert [o.split(": ", 1)[1] for o in offences(sample, tmp_path)] == [
        "session.begin",
        "session.sandbox",
        "manager.agent_failed",
        "manager.agent_failed_later",
    ]
