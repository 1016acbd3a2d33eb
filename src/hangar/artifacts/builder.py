"""``ArtifactBuilder.prepare``: a code artifact in, an immutable runnable version out (built once per content).

Layout under ``<data_dir>/versions/``::

    <content hash>/code        the unpacked artifact (the agent's working directory), read-only
    <content hash>/env         the uv-built virtualenv with the requirements and hangar.sdk, read-only
    <content hash>/build.log   uv's output;   build.json: runtime, interpreter, timings
    .build-<hash>-<random>/    a build in progress; renamed to <content hash> only when complete

Blocking and thread-safe: the control plane calls it from worker threads. Builds of one hash in this process
wait for each other; across processes the atomic rename decides, and the loser discards its copy.
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
import zipfile
import zlib
from pathlib import Path

from hangar.artifacts.api import BuildError, CodeArtifact
from hangar.artifacts.phases.finalize import (
    check_entry_point,
    check_entry_shape,
    compile_bytecode,
    make_read_only,
    publish,
    remove_tree,
    write_metadata,
)
from hangar.artifacts.phases.hashing import Fingerprint, fingerprint
from hangar.artifacts.phases.install import install
from hangar.artifacts.phases.resolve import resolve
from hangar.artifacts.phases.unpack import unpack
from hangar.artifacts.runtimes import Interpreter, interpreter_for
from hangar.artifacts.sdk import sdk_fingerprint
from hangar.artifacts.source import Source, open_source
from hangar.artifacts.store import ArtifactStore, StoreError
from hangar.config import Settings
from hangar.domain.invocation import PreparedVersion

log = logging.getLogger("hangar.artifacts")

STALE_BUILD_S = 6 * 3600  # unfinished builds older than this are leftovers of a crash


class ArtifactBuilder:
    def __init__(self, settings: Settings) -> None:
        self.store = ArtifactStore(settings.resolved_artifacts_dir)
        self.versions_dir = (settings.data_dir / "versions").resolve()
        self.cache_dir = (settings.data_dir / "cache" / "uv").resolve()
        self._guard = threading.Lock()
        self._locks: dict[str, threading.Lock] = {}

    def prepare(self, artifact: CodeArtifact) -> PreparedVersion:
        """Build (or reuse) the version for ``artifact``; BuildError with a readable reason when it cannot."""
        started = time.monotonic()
        check_entry_shape(artifact.entry_point)
        interpreter = interpreter_for(artifact.runtime)
        try:
            location = self.store.locate(artifact.bucket, artifact.prefix, artifact.version_id)
        except StoreError as exc:
            raise BuildError(f"artifact s3://{artifact.bucket}/{artifact.prefix}: {exc.message}") from None
        try:
            with open_source(location) as source:
                prints = fingerprint(source, interpreter, sdk_fingerprint())
                code_files = {entry.name for entry in source.entries if entry.kind in ("file", "link")}
                check_entry_point(artifact.entry_point, code_files, None)  # fail before spending minutes on uv
                final_dir = self.versions_dir / prints.content_hash
                with self._lock_for(prints.content_hash):
                    if final_dir.is_dir():
                        log.info("version %s CACHED (%s)", prints.content_hash[:12], location.uri)
                    else:
                        self._build(source, prints, interpreter, final_dir)
        except (OSError, zipfile.BadZipFile, zlib.error, EOFError, NotImplementedError) as exc:
            # A corrupt member (bad CRC, unknown compression), a full disk: a reason, not an internal error.
            raise BuildError(f"{location.uri}: cannot be unpacked or built ({type(exc).__name__}: {exc})") from None
        env_dir = final_dir / "env"
        check_entry_point(artifact.entry_point, code_files, env_dir)
        log.info("prepared %s as %s in %.2fs", location.uri, prints.content_hash[:12], time.monotonic() - started)
        return PreparedVersion(
            code_dir=final_dir / "code",
            env_dir=env_dir,
            entry_point=tuple(artifact.entry_point),
            content_hash=prints.content_hash,
        )

    def _build(self, source: Source, prints: Fingerprint, interpreter: Interpreter, final_dir: Path) -> None:
        self.versions_dir.mkdir(parents=True, exist_ok=True)
        self.versions_dir.chmod(0o755)
        self._remove_stale_builds()
        build_dir = self.versions_dir / f".build-{prints.content_hash[:16]}-{uuid.uuid4().hex[:8]}"
        build_dir.mkdir(mode=0o755)
        build_log = build_dir / "build.log"
        timings: dict[str, float] = {}
        try:
            clock = time.monotonic()
            unpack(source, prints, build_dir / "code")
            timings["unpack"] = time.monotonic() - clock
            clock = time.monotonic()
            plan = resolve(build_dir / "code", interpreter)
            install(plan, build_dir / "env", self.cache_dir, build_log)
            timings["install"] = time.monotonic() - clock
            clock = time.monotonic()
            compile_bytecode(build_dir / "env", build_dir / "code", build_log)
            write_metadata(
                build_dir,
                {
                    "contentHash": prints.content_hash,
                    "source": source.uri,
                    "runtime": interpreter.runtime,
                    "interpreter": str(interpreter.path),
                    "requirements": plan.requirements.name if plan.requirements else None,
                    "seconds": {**timings, "finalize": time.monotonic() - clock},
                },
            )
            make_read_only(build_dir)
            if not publish(build_dir, final_dir):
                log.info("version %s was built concurrently elsewhere; using that one", prints.content_hash[:12])
        except BaseException:
            remove_tree(build_dir)
            raise
        log.info("version %s BUILT from %s (%s)", prints.content_hash[:12], source.uri, _format(timings))

    def _lock_for(self, content_hash: str) -> threading.Lock:
        with self._guard:
            return self._locks.setdefault(content_hash, threading.Lock())

    def _remove_stale_builds(self) -> None:
        now = time.time()
        for leftover in self.versions_dir.glob(".build-*"):
            try:
                old = now - leftover.stat().st_mtime > STALE_BUILD_S
            except FileNotFoundError:
                continue
            if old:
                remove_tree(leftover)


def _format(timings: dict[str, float]) -> str:
    return ", ".join(f"{phase} {seconds:.2f}s" for phase, seconds in timings.items())
