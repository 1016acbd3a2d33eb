"""Fixtures for builder tests: a real ``ArtifactBuilder`` on a fresh data dir, and helpers that write artifacts
straight into the store's directory (as an operator may) or as zips."""

from __future__ import annotations

import stat
import zipfile
from pathlib import Path

import pytest

from hangar.artifacts.api import CodeArtifact
from hangar.artifacts.builder import ArtifactBuilder
from hangar.artifacts.store import ArtifactStore
from hangar.config import Settings

BUCKET = "hangar-artifacts"


class Artifacts:
    """Writes artifacts into one builder's store and names them as the control plane would."""

    def __init__(self, builder: ArtifactBuilder) -> None:
        self.builder = builder
        self.store: ArtifactStore = builder.store
        (self.store.root / BUCKET).mkdir(parents=True, exist_ok=True)

    def folder(self, prefix: str, files: dict[str, str]) -> Path:
        root = self.store.root / BUCKET / prefix
        for name, text in files.items():
            (root / name).parent.mkdir(parents=True, exist_ok=True)
            (root / name).write_text(text)
        return root

    def zip(self, key: str, files: dict[str, str | bytes], links: dict[str, str] | None = None) -> Path:
        path = self.store.root / BUCKET / key
        path.parent.mkdir(parents=True, exist_ok=True)
        with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as archive:
            for name, content in files.items():
                archive.writestr(name, content)
            for name, target in (links or {}).items():
                info = zipfile.ZipInfo(name)
                info.create_system = 3
                info.external_attr = (stat.S_IFLNK | 0o777) << 16
                archive.writestr(info, target)
        return path

    def artifact(
        self, prefix: str, entry: tuple[str, ...] = ("main.py",), runtime: str = "PYTHON_3_11", version_id=None
    ) -> CodeArtifact:  # type: ignore[no-untyped-def]
        return CodeArtifact(BUCKET, prefix, version_id, runtime, entry)


@pytest.fixture
def artifacts(tmp_path: Path) -> Artifacts:
    return Artifacts(ArtifactBuilder(Settings(data_dir=tmp_path / "data")))
