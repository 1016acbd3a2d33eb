"""Turn a version's artifact into a ``PreparedVersion`` (blocking: called from a worker thread)."""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING

from hangar.artifacts.api import BuildError, CodeArtifact
from hangar.config import Settings
from hangar.domain.errors import HangarError
from hangar.domain.invocation import PreparedVersion
from hangar.domain.runtime import CodeLocation, RuntimeSpec

if TYPE_CHECKING:
    from hangar.artifacts.builder import ArtifactBuilder
    from hangar.control.registry import Registry

NO_CONTAINER_BACKEND = "container images are not supported by this installation yet: no container backend"


class Preparer:
    """Holds one ``ArtifactBuilder`` (it keeps per-hash locks, so one per process) and the image registry."""

    def __init__(self, settings: Settings, registry: Registry | None = None) -> None:
        self.settings = settings
        self.registry = registry
        self._builder: ArtifactBuilder | None = None
        self._lock = threading.Lock()

    def prepare(self, spec: RuntimeSpec) -> PreparedVersion:
        code = spec.code
        if code is None:
            return self._prepare_image(spec)
        return self.prepare_code(code)

    def prepare_code(self, code: CodeLocation) -> PreparedVersion:
        """Build a code artifact already in this process's artifact store (a cluster node mirrors it there first;
        it calls this directly, as it has no registry: its images come by another path)."""
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

    def _prepare_image(self, spec: RuntimeSpec) -> PreparedVersion:
        uri = spec.container_uri
        if uri is None or self.registry is None:
            raise BuildError(NO_CONTAINER_BACKEND)
        from hangar.control.images import ImagePreparer

        try:
            return ImagePreparer(self.registry).prepare(uri)
        except HangarError as exc:
            raise BuildError(exc.message) from None
