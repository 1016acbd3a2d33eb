"""The namespace backend stays one unit with one owner per state: no module of ``sandbox/namespace`` has a function
that takes the backend and calls back into it, none but ``backend.py`` (and the package's ``__init__``) imports
the backend, so templates, forks and resources get their dependencies passed in, and only ``templates.py`` writes a
template's state. Read with ``ast``, nothing runs."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PACKAGE = ROOT / "src" / "hangar" / "sandbox" / "namespace"
BACKEND_MODULE = "hangar.sandbox.namespace.backend"


def backend_parameters(source: str, filename: str = "<source>") -> list[str]:
    """``name:line param`` for every function parameter named like the backend or annotated with a backend type."""
    found: list[str] = []
    for node in ast.walk(ast.parse(source, filename=filename)):
        if not isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda):
            continue
        arguments = node.args
        for arg in [*arguments.posonlyargs, *arguments.args, *arguments.kwonlyargs, arguments.vararg, arguments.kwarg]:
            if arg is None or arg.arg in ("self", "cls"):
                continue
            annotation = ast.unparse(arg.annotation) if arg.annotation is not None else ""
            if arg.arg in ("backend", "owner") or "Backend" in annotation:
                name = getattr(node, "name", "<lambda>")
                found.append(f"{filename}:{node.lineno} {name}({arg.arg})")
    return found


def backend_imports(source: str, filename: str = "<source>") -> list[str]:
    """Imports of the backend module (``TYPE_CHECKING`` ones too: they exist to type a backend parameter)."""
    found: list[str] = []
    for node in ast.walk(ast.parse(source, filename=filename)):
        if isinstance(node, ast.ImportFrom) and node.module is not None:
            names = [node.module] + [f"{node.module}.{alias.name}" for alias in node.names]
        elif isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        else:
            continue
        if BACKEND_MODULE in names:
            found.append(f"{filename}:{node.lineno}")
    return found


def template_writes(source: str, filename: str = "<source>") -> list[str]:
    """Assignments to an attribute of something named ``template`` (or ``*_template``): its state, written from
    outside ``templates.py``, would have two owners again."""
    found: list[str] = []
    for node in ast.walk(ast.parse(source, filename=filename)):
        targets: list[ast.expr] = []
        if isinstance(node, ast.Assign):
            targets = [leaf for target in node.targets for leaf in ast.walk(target)]
        elif isinstance(node, ast.AugAssign | ast.AnnAssign):
            targets = [node.target]
        for target in targets:
            owner = target.value.id if isinstance(target, ast.Attribute) and isinstance(target.value, ast.Name) else ""
            if owner == "template" or owner.endswith("_template"):
                found.append(f"{filename}:{node.lineno} {ast.unparse(target)}")
    return found


def modules() -> list[Path]:
    paths = sorted(PACKAGE.glob("*.py"))
    assert len(paths) > 5  # the package is where this test thinks it is
    return paths


def test_the_checks_see_the_shape_they_forbid() -> None:
    old_shape = (
        "from typing import TYPE_CHECKING\n"
        "if TYPE_CHECKING:\n"
        "    from hangar.sandbox.namespace.backend import NamespaceBackend\n"
        "async def start_template(backend: NamespaceBackend, spec: object) -> None: ...\n"
        "async def discard(owner: 'NamespaceBackend', prepared: object) -> None: ...\n"
        "class Keeper:\n"
        "    def __init__(self, backend) -> None: ...\n"
    )
    assert len(backend_parameters(old_shape)) == 3
    assert len(backend_imports(old_shape)) == 1
    assert backend_imports("from hangar.sandbox.namespace import backend\n") != []
    assert backend_parameters("def f(resources: object, spec: object) -> None: ...\n") == []
    writes = "template.forks += 1\nspare, template.spare = template.spare, None\nx = template.forks\n"
    assert len(template_writes(writes)) == 2


def test_no_function_takes_the_backend() -> None:
    problems = [found for path in modules() for found in backend_parameters(path.read_text(), path.name)]
    assert problems == []


def test_only_the_backend_module_and_the_package_import_the_backend() -> None:
    outside = [path for path in modules() if path.name not in ("backend.py", "__init__.py")]
    problems = [found for path in outside for found in backend_imports(path.read_text(), path.name)]
    assert problems == []


def test_only_the_template_writes_its_state() -> None:
    outside = [path for path in modules() if path.name != "templates.py"]
    problems = [found for path in outside for found in template_writes(path.read_text(), path.name)]
    assert problems == []


def test_every_module_says_its_job() -> None:
    missing = [path.name for path in modules() if not ast.get_docstring(ast.parse(path.read_text()))]
    assert missing == []
