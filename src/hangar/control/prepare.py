"""Turn a version's artifact into a ``PreparedVersion`` (blocking: called from a worker thread)."""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING

from hangar.artifacts.api import BuildError, CodeArtifact
from hangar.config import Settings
from hangar.domain.invocation import PreparedVersion
from hangar.domain.runtime import RuntimeSpec

if TYPE_CHECKING:
    from hangar.artifacts.builder import ArtifactBuilder

NO_CONTAINER_BACKEND = "container images are not supported by this installation yet: no container backend"


class Preparer:
    """Holds one ``ArtifactBuilder`` (it keeps per-hash locks, so one per process)."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._builder: ArtifactBuilder | None = None
        self._lock = threading.Lock()

    def prepare(self, spec: RuntimeSpec) -> PreparedVersion:
        code = spec.code
        if code is None:
            raise BuildError(NO_CONTAINER_BACKEND)
        with self._lock:  # builds run in parallel threads; they must share one builder (and its per-hash locks)
            if self._builder is None:
                from hangar.artifacts.builder import ArtifactBuilder  # heavy; only needed once something is built

                self._builder = ArtifactBuilder(self.settings)
        artifact = CodeArtifact(
            bucket=code.bucket,
            prefix=code.prefix,
            version_id=code.version_id,
            runtime=code.runtime,
            entry_point=code.entry_point,
        )
        return self._builder.prepare(artifact)
