"""Where ``main.py`` enters its event loop, when that entry is a warm template's fork point (``zygote.py``).

An in-sandbox program (standard library only, loaded by path by the zygote). It is separate because it is the part
of the zygote that reads the agent's source and stack (pure ``ast`` and frame walking, no process state): which
top-level lines of ``main.py`` may fork (``if __name__ == "__main__":`` blocks and the last statement), whether the
loop being made is entered from one of them, and why a loop the template cannot fork before is not a fork point.
"""

from __future__ import annotations

import ast
import os
from types import FrameType


def entry_lines(source: bytes) -> list[tuple[int, int]]:
    """Line ranges of main.py whose event loop entry is the fork point: ``if __name__ == "__main__":`` blocks and
    the last top-level statement (``asyncio.run(main())`` at the end of a script without the guard)."""
    body = ast.parse(source).body
    ranges = [(node.lineno, node.end_lineno or node.lineno) for node in body if _is_main_guard(node)]
    if body:
        ranges.append((body[-1].lineno, body[-1].end_lineno or body[-1].lineno))
    return ranges


def _is_main_guard(node: ast.stmt) -> bool:
    if not isinstance(node, ast.If) or not isinstance(node.test, ast.Compare) or len(node.test.ops) != 1:
        return False
    sides = [node.test.left, *node.test.comparators]
    names = [side.id for side in sides if isinstance(side, ast.Name)]
    constants = [side.value for side in sides if isinstance(side, ast.Constant)]
    return isinstance(node.test.ops[0], ast.Eq) and names == ["__name__"] and constants == ["__main__"]


def entry_line(frame: FrameType | None, script: str, lines: list[tuple[int, int]]) -> int | None:
    """The line of main.py's top level that enters this event loop, when that entry is the fork point: the
    first module-level frame up the stack must be main.py's (not a module being imported) at an entry line."""
    while frame is not None:
        if frame.f_code.co_name == "<module>":
            if frame.f_code.co_filename != script:
                return None
            line = frame.f_lineno
            return line if any(first <= line <= last for first, last in lines) else None
        frame = frame.f_back
    return None


def serve_in_loop_reason(frame: FrameType | None, script: str) -> str:
    """Why uvicorn reached inside a running loop in the template cannot fork, as precisely as the stack says."""
    where = ""
    while frame is not None:
        if frame.f_code.co_filename == script and frame.f_code.co_name == "<module>":
            where = f" (entered at {os.path.basename(script)}:{frame.f_lineno})"
            break
        frame = frame.f_back
    return (
        f"the agent starts uvicorn (Server.serve) inside an event loop{where} that Hangar cannot fork before: "
        "only a loop entered through asyncio.run, asyncio.Runner, anyio.run or uvloop.run by main.py's own "
        'top level (inside `if __name__ == "__main__":` or as its last statement) is a fork point, not one made '
        "with new_event_loop()/run_until_complete, entered while importing or from a thread"
    )
