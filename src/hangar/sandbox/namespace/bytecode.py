"""Compiled in-sandbox programs: a cold start runs the supervisor's bytecode instead of compiling its source.

``python FILE`` never uses a cached ``.pyc`` for its main script, and ``-B`` (nothing inside may write one) leaves
the supervisor's siblings uncached too: every cold start compiled ~800 lines (~3 ms of CPU before the agent's spawn,
as much again after it). The host compiles the in-sandbox programs once into a directory named by the hash of
their content and of its interpreter's bytecode tag and magic number, bound read-only at ``/opt/hangar/__pycache__``.

Never stale: the files are checked-hash pycs (PEP 552), so the sandbox's own interpreter compares each against the
source bound beside it and compiles that source instead when they differ; an interpreter of another version looks
for another file name (its own cache tag) or rejects the magic number, and compiles the source as before. The
supervisor's main script goes through the same loader (``runner_argv``): the content the sandbox runs is that of
the same source files, only their compile is skipped.
"""

from __future__ import annotations

import hashlib
import importlib.util
import py_compile
import sys
from collections.abc import Sequence
from pathlib import Path

from hangar.sandbox.namespace import rootfs

# Run by the sandbox's interpreter with ``-c``: the main script's code through SourceFileLoader (its checked-hash
# pyc when it matches the source, else the source compiled), executed as ``__main__`` with its own ``__file__``. The
# frozen loader is already loaded (``importlib.machinery`` would import ``warnings`` too).
RUNNER = (
    "import sys\n"
    "from _frozen_importlib_external import SourceFileLoader\n"
    "m = sys.modules['__main__']\n"
    "m.__file__ = {path!r}\n"
    "exec(SourceFileLoader('__main__', m.__file__).get_code('__main__'), m.__dict__)\n"
)


def key(sources: Sequence[Path]) -> str:
    """What the compiled files depend on: this interpreter's bytecode format and every program's name and bytes."""
    digest = hashlib.sha256()
    digest.update(f"{sys.implementation.cache_tag}\0".encode())
    digest.update(importlib.util.MAGIC_NUMBER)
    for source in sorted(sources):
        data = source.read_bytes()
        digest.update(f"\0{source.name}\0{len(data)}\0".encode())
        digest.update(data)
    return digest.hexdigest()[:32]


def compiled(root: Path, sources: Sequence[Path], inside_dir: str) -> Path | None:
    """``root/<key>``, holding each program's checked-hash pyc under the name this interpreter's import system looks
    for beside ``inside_dir/<name>.py``; made once (atomically, by rename) and root-owned, world-readable. None when
    this interpreter writes no bytecode cache at all (``cache_tag`` None)."""
    tag: str | None = getattr(sys.implementation, "cache_tag", None)
    if tag is None:
        return None

    def fill(building: Path) -> None:
        for source in sources:
            pyc = building / f"{source.stem}.{tag}.pyc"
            py_compile.compile(
                str(source),
                cfile=str(pyc),
                dfile=f"{inside_dir}/{source.name}",
                doraise=True,
                invalidation_mode=py_compile.PycInvalidationMode.CHECKED_HASH,
            )
            pyc.chmod(0o644)

    return rootfs.content_dir(root / key(sources), fill)


def runner_argv(argv: Sequence[str], script: str) -> list[str]:
    """``argv`` (an interpreter's ``... -B SCRIPT ARGS``) with ``SCRIPT`` replaced by ``-c RUNNER``: the script's
    arguments stay where they were (``sys.argv[1:]``), its ``__name__`` is ``__main__`` and its ``__file__`` the
    same path, so its siblings load from beside it as before."""
    at = list(argv).index(script)
    return [*argv[:at], "-c", RUNNER.format(path=script), *argv[at + 1 :]]
