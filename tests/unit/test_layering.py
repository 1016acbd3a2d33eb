"""Imports run down the table of docs/architecture.md: the test reads the "may import" column from the doc and every
``import hangar.*`` of ``src/hangar`` with ``ast`` (inside functions too), so code and doc cannot drift apart.

Besides the table (as the doc says under it): ``hangar`` itself (the version) is open to all; the composition root
(``services.py``) may import any package but ``sdk``; imports under
``if TYPE_CHECKING:`` serve annotations only and are not checked.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SRC = ROOT / "src" / "hangar"
DOC = ROOT / "docs" / "architecture.md"
TOP_LEVEL_MODULES = ("config", "services")


def may_import_table() -> dict[str, set[str]]:
    """{package: the hangar packages and top-level modules it may import}, from the doc's package table."""
    section = DOC.read_text().split("## Packages and their single jobs", 1)[1].split("\n## ", 1)[0]
    rows = [line for line in section.splitlines() if line.startswith("| `")]
    packages = [re.match(r"\| `([a-z_]+)/`", row).group(1) for row in rows]  # type: ignore[union-attr]
    known = set(packages) | set(TOP_LEVEL_MODULES)
    table: dict[str, set[str]] = {}
    for index, (package, row) in enumerate(zip(packages, rows, strict=True)):
        cell = row.rstrip(" |").rsplit(" | ", 1)[1]
        words = set(re.findall(r"[a-z_]+", cell))
        allowed = {word for word in words if word in known}
        if "all above except" in cell:
            excluded = set(re.findall(r"[a-z_]+", cell.split("all above except", 1)[1].split(";", 1)[0]))
            allowed = (allowed | set(packages[:index])) - excluded
        table[package] = allowed - {package}
    return table


def is_composition_root(path: Path) -> bool:
    return path.name == "services.py"


def type_checking_nodes(tree: ast.AST) -> set[int]:
    """ids of the import nodes inside ``if TYPE_CHECKING:`` blocks."""
    found: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            found |= {id(inner) for stmt in node.body for inner in ast.walk(stmt)}
    return found


def hangar_imports(path: Path) -> list[tuple[int, str]]:
    """(line, first name under hangar) of every runtime import of hangar in ``path``; relative ones resolved."""
    tree = ast.parse(path.read_text(), filename=str(path))
    skip = type_checking_nodes(tree)
    package_parts = ["hangar", *path.relative_to(SRC).parent.parts]
    found: list[tuple[int, str]] = []
    for node in ast.walk(tree):
        if id(node) in skip:
            continue
        names: list[str] = []
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package_parts[: len(package_parts) - node.level + 1]
                names = [".".join([*base, node.module] if node.module else base)]
            elif node.module:
                names = [node.module]
        for name in names:
            parts = name.split(".")
            if parts[0] == "hangar" and len(parts) > 1:
                found.append((node.lineno, parts[1]))
    return found


def violations() -> list[str]:
    table = may_import_table()
    problems: list[str] = []
    for path in sorted(SRC.rglob("*.py")):
        relative = path.relative_to(SRC)
        owner = relative.parts[0] if len(relative.parts) > 1 else relative.stem
        if owner in TOP_LEVEL_MODULES or owner == "__init__":
            allowed = None if owner == "services" else set()  # config (and hangar/__init__) import nothing of hangar
        elif owner not in table:
            problems.append(f"src/hangar/{relative}: package {owner}/ has no row in docs/architecture.md")
            continue
        else:
            allowed = table[owner]
        for line, target in hangar_imports(path):
            target = Path(target).stem
            if target == owner or (target == "sdk" and owner == "sdk"):
                continue
            if target == "sdk":
                problems.append(f"src/hangar/{relative}:{line}: imports sdk (the server never imports the SDK)")
            elif allowed is None or (is_composition_root(path) and owner != "sdk"):
                continue
            elif target not in allowed:
                problems.append(f"src/hangar/{relative}:{line}: {owner} may not import {target}")
    return problems


def test_the_doc_table_names_every_package() -> None:
    packages = {p.name for p in SRC.iterdir() if p.is_dir() and (p / "__init__.py").exists()}
    assert packages <= set(may_import_table())


def test_the_table_is_read_as_written() -> None:
    table = may_import_table()
    assert table["sdk"] == set() and table["domain"] == set()
    assert table["store"] == {"domain"}
    assert {"domain", "store", "sandbox", "sessions", "auth", "identity", "config", "services"} <= table["gateway"]
    assert "sdk" not in table["gateway"]
    assert "identity" not in table["sessions"]  # sessions reach identity only through the gateway's seam


def test_every_import_runs_down_the_table() -> None:
    assert violations() == []


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        ("from hangar.gateway.app import create_app\n", "store may not import gateway"),
        ("def late() -> None:\n    import hangar.sessions.manager\n", "store may not import sessions"),
        ("from hangar.sdk import AgentApp\n", "imports sdk"),
    ],
)
def test_a_wrong_import_is_caught(tmp_path: Path, source: str, expected: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """The checker itself: a copy of src/hangar with one bad import added to store/ is reported."""
    import shutil

    copy = tmp_path / "hangar"
    shutil.copytree(SRC, copy, ignore=shutil.ignore_patterns("__pycache__"))
    (copy / "store" / "bad_import.py").write_text(source)
    monkeypatch.setattr(f"{__name__}.SRC", copy)
    found = violations()
    assert len(found) == 1 and expected in found[0], found
