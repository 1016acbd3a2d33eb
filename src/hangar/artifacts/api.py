"""The seam between the control plane and the artifact builder."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class CodeArtifact:
    """``codeConfiguration`` of one version: where the code is and how to run it."""

    bucket: str
    prefix: str
    version_id: str | None
    runtime: str  # PYTHON_3_11, ...
    entry_point: tuple[str, ...]


class BuildError(Exception):
    """Preparing a version failed; ``reason`` is shown to the user as the version's ``failureReason``."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason
