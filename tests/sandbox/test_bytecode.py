"""The in-sandbox programs' bytecode: a cold start's supervisor runs compiled, never from a stale compile, and the
sandbox cannot write the cache it is given."""

from __future__ import annotations

import functools
import json
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from hangar.sandbox.namespace import bytecode, rootfs
from hangar.sandbox.namespace.backend import NamespaceBackend
from hangar.sandbox.selection import namespace_unsupported_reason
from tests.sandbox.fixtures import AgentFiles, make_backend, run_exec, started, wait_ping, world_readable_dir

# Prepended to the runner in the tests: reports the file name of every compile (audit events; the standard library
# compiles a few strings of its own, "<string>").
AUDIT = (
    "import sys\n"
    "SEEN = []\n"
    "sys.addaudithook(lambda event, args: SEEN.append(str(args[1])) if event == 'compile' else None)\n"
)
PROGRAM = (
    "import json, sys\n"
    "from sibling import VALUE\n"
    "print(json.dumps({'name': __name__, 'file': __file__, 'argv': sys.argv[1:], 'value': VALUE, 'seen': SEEN}))\n"
)


@pytest.fixture
def programs(tmp_path: Path) -> Iterator[tuple[Path, Path]]:
    """A main script and a sibling it imports (by sys.path, as the supervisor loads its siblings by path), compiled
    and placed where the import system looks for them (as the sandbox's bind does)."""
    inside = tmp_path / "opt"
    inside.mkdir()
    (inside / "main.py").write_text(f"import sys\nsys.path.insert(0, {str(inside)!r})\n{PROGRAM}")
    (inside / "sibling.py").write_text("VALUE = 'compiled'\n")
    yield inside, tmp_path / "cache"


def _run(inside: Path, cache: Path) -> dict[str, object]:
    sources = [inside / "main.py", inside / "sibling.py"]
    made = bytecode.compiled(cache, sources, str(inside))
    assert made is not None
    link = inside / "__pycache__"
    if link.is_symlink():
        link.unlink()
    link.symlink_to(made)
    script = str(inside / "main.py")
    argv = bytecode.runner_argv([sys.executable, "-I", "-S", "-B", script, "--x=1", "--", "a"], script)
    assert argv[4] == "-c" and argv[6:] == ["--x=1", "--", "a"]
    argv[5] = AUDIT + argv[5]
    out = subprocess.run(argv, capture_output=True, text=True, check=True, timeout=60).stdout
    result: dict[str, object] = json.loads(out)
    return result


def test_the_runner_runs_the_script_as_main_from_its_bytecode_without_compiling_it(programs: tuple[Path, Path]) -> None:
    inside, cache = programs
    result = _run(inside, cache)
    assert result["name"] == "__main__" and result["file"] == str(inside / "main.py")
    assert result["argv"] == ["--x=1", "--", "a"]
    assert result["value"] == "compiled"
    seen = result["seen"]
    assert isinstance(seen, list) and not [name for name in seen if name.startswith(str(inside))], seen


def test_a_changed_source_is_compiled_again_never_run_from_the_old_bytecode(programs: tuple[Path, Path]) -> None:
    """The cache of the old content stays where it was bound: the loader sees the source's hash differ."""
    inside, cache = programs
    first = bytecode.compiled(cache, [inside / "main.py", inside / "sibling.py"], str(inside))
    assert first is not None
    (inside / "__pycache__").symlink_to(first)
    (inside / "sibling.py").write_text("VALUE = 'edited'\n")
    (inside / "main.py").write_text((inside / "main.py").read_text().replace("'value': VALUE", "'value': VALUE + '!'"))
    script = str(inside / "main.py")
    argv = bytecode.runner_argv([sys.executable, "-I", "-S", "-B", script], script)
    argv[5] = AUDIT + argv[5]
    result = json.loads(subprocess.run(argv, capture_output=True, text=True, check=True, timeout=60).stdout)
    assert result["value"] == "edited!"
    compiled = {name for name in result["seen"] if name.startswith(str(inside))}
    assert compiled == {str(inside / "main.py"), str(inside / "sibling.py")}  # the old bytecode was refused
    # And the cache for the new content is another directory.
    second = bytecode.compiled(cache, [inside / "main.py", inside / "sibling.py"], str(inside))
    assert second is not None and second != first and first.is_dir()


def test_the_key_covers_every_program_and_its_name(tmp_path: Path) -> None:
    (tmp_path / "a.py").write_text("A = 1\n")
    (tmp_path / "b.py").write_text("A = 1\n")
    one = bytecode.key([tmp_path / "a.py"])
    assert bytecode.key([tmp_path / "b.py"]) != one  # same bytes, another name
    (tmp_path / "a.py").write_text("A = 2\n")
    assert bytecode.key([tmp_path / "a.py"]) != one


needs_namespaces = pytest.mark.skipif(
    namespace_unsupported_reason() is not None, reason=str(namespace_unsupported_reason())
)


@pytest.fixture
def state_root() -> Iterator[Path]:
    root = world_readable_dir("hangar-bytecode-")
    yield root
    shutil.rmtree(root, ignore_errors=True)


@needs_namespaces
@pytest.mark.anyio
async def test_a_cold_sandbox_runs_its_supervisor_compiled_from_a_cache_it_cannot_write(
    state_root: Path, agent_files: AgentFiles
) -> None:
    backend = make_backend("namespace", state_root)
    async with started(backend, agent_files.spec()) as sandbox:
        assert (await wait_ping(sandbox)).status_code == 200
        made = backend._bytecode  # type: ignore[attr-defined]
        assert made is not None and made.parent == state_root / ".bytecode"
        tag = sys.implementation.cache_tag
        listing = sorted(p.name for p in made.iterdir())
        assert f"supervisor.{tag}.pyc" in listing and f"commands.{tag}.pyc" in listing
        pycache = f"{rootfs.INSIDE_DIR}/{rootfs.BYTECODE_DIR}"
        out, err, code, _ = await run_exec(
            sandbox,
            f"ls {pycache}; for c in /proc/[0-9]*/cmdline; do tr '\\0' ' ' < $c; echo; done; "
            f"touch {pycache}/x 2>/dev/null && echo W'R'OTE; echo >> {pycache}/supervisor.{tag}.pyc 2>/dev/null "
            "&& echo W'R'OTE; true",
        )
        assert code == 0, err
        text = out.decode()
        assert f"supervisor.{tag}.pyc" in text and "WROTE" not in text
        assert "SourceFileLoader('__main__'" in text and f"{rootfs.SUPERVISOR_PATH}" in text  # the supervisor's runner
        assert os.stat(made / f"supervisor.{tag}.pyc").st_uid == 0


@needs_namespaces
@pytest.mark.anyio
async def test_a_cache_removed_under_a_running_backend_is_made_again_and_the_launch_between_runs_the_source(
    state_root: Path, agent_files: AgentFiles
) -> None:
    backend = make_backend("namespace", state_root)
    async with started(backend, agent_files.spec()) as sandbox:
        assert (await wait_ping(sandbox)).status_code == 200
    made = backend._bytecode  # type: ignore[attr-defined]
    assert made is not None
    shutil.rmtree(made)
    # start() made it already: this launch finds it gone, binds nothing there and runs the supervisor's source.
    async with started(backend, agent_files.spec()) as sandbox:
        assert (await wait_ping(sandbox)).status_code == 200
        out, err, code, _ = await run_exec(sandbox, f"ls {rootfs.INSIDE_DIR}; cat /proc/[0-9]*/cmdline | tr '\\0' ' '")
        assert code == 0, err
        assert rootfs.BYTECODE_DIR not in out.decode() and "SourceFileLoader" not in out.decode()
    async with started(backend, agent_files.spec()) as sandbox:  # the next start makes it again
        assert (await wait_ping(sandbox)).status_code == 200
        assert made.is_dir()


@pytest.mark.skipif(namespace_unsupported_reason() is not None, reason=str(namespace_unsupported_reason()))
def test_first_cold_starts_at_once_copy_and_compile_without_racing() -> None:
    """Concurrent first starts each reach ``bytecode()`` from a thread while templates copy the programs from the
    loop: every caller gets the cache and the copies, nobody trips over another's temporary file (CI saw a
    FileNotFoundError from two copies sharing one ``.tmp`` name)."""
    from concurrent.futures import ThreadPoolExecutor

    for _ in range(5):  # a fresh state root each round: the race is in the first copy and compile
        root = world_readable_dir("hangar-bytecode-race-")
        try:
            backend = make_backend("namespace", root)
            assert isinstance(backend, NamespaceBackend)
            with ThreadPoolExecutor(8) as pool:
                made = list(pool.map(functools.partial(_first_use, backend), range(16)))
            assert backend.compiled_programs, "a race switched the compiled programs off"
            caches = {path for i, path in enumerate(made) if i % 2}
            assert len(caches) == 1 and all(isinstance(p, Path) and p.is_dir() for p in caches)
            assert not list((root / ".inside").glob("*.tmp")) and not list((root / ".bytecode").glob(".*.tmp"))
        finally:
            shutil.rmtree(root, ignore_errors=True)


def _first_use(backend: NamespaceBackend, i: int) -> Path | None:
    return backend.bytecode() if i % 2 else backend.resources.inside_files()
