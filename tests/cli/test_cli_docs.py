"""docs/cli.md moves with the code: every option of the deploy/upload/runtimes/versions/endpoints commands is on it."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import typer

from hangar.cli.main import app

ROOT = Path(__file__).resolve().parents[2]
DOCUMENTED = ("deploy", "upload", "runtimes", "versions", "endpoints")


def commands() -> list[tuple[str, Any]]:
    """(name, click command) pairs; typer may vendor click, so groups are recognised by their ``commands``."""
    root: Any = typer.main.get_command(app)
    found: list[tuple[str, Any]] = []
    for name in DOCUMENTED:
        command = root.commands[name]
        if hasattr(command, "commands"):
            found += [(f"{name} {sub}", command.commands[sub]) for sub in command.commands]
        else:
            found.append((name, command))
    return found


@pytest.mark.parametrize(("name", "command"), commands(), ids=[name for name, _ in commands()])
def test_command_and_its_options_are_documented(name: str, command: Any) -> None:
    page = (ROOT / "docs" / "cli.md").read_text()
    assert f"hangar {name}" in page, f"docs/cli.md does not show `hangar {name}`"
    for param in command.params:
        for option in param.opts:
            if option.startswith("--"):
                assert f"`{option}" in page or f"[{option}" in page or f" {option}" in page, (
                    f"docs/cli.md does not mention {option} of `hangar {name}`"
                )
