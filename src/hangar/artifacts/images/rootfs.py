"""The content-addressed, deduplicated rootfs store.

``layers/<hex>/`` holds one unpacked layer (``tree/`` plus ``layer.json`` with its whiteouts), keyed by the layer
blob's digest and shared by every image that has it. ``rootfs/<hex>/`` is one assembled image keyed by its
manifest digest: the layers' trees applied in order (whiteouts and opaque directories removing what lower layers
put there), every file a hard link into the layer store, so a file shared by many images exists once on disk.
Both are built in a ``.tmp-*`` directory and renamed into place: a kill -9 mid-unpack leaves only a temporary
directory, swept at start, and a name under ``layers/`` or ``rootfs/`` always means a complete tree.
"""

from __future__ import annotations

import json
import logging
import os
import posixpath
import secrets
import shutil
import stat
import threading
import time
from collections.abc import Iterable
from pathlib import Path

from hangar.artifacts.images.errors import ImageError
from hangar.artifacts.images.unpack import Budget, _parent, remove, unpack_layer

log = logging.getLogger("hangar.images")


class RootfsStore:
    def __init__(self, root: Path) -> None:
        self.layer_dir = root / "layers"
        self.rootfs_dir = root / "rootfs"
        for directory in (self.layer_dir, self.rootfs_dir):
            directory.mkdir(parents=True, exist_ok=True)
        self._locks: dict[str, threading.Lock] = {}
        self._guard = threading.Lock()

    def _lock(self, key: str) -> threading.Lock:
        with self._guard:
            return self._locks.setdefault(key, threading.Lock())

    def rootfs_path(self, manifest_digest: str) -> Path:
        return self.rootfs_dir / manifest_digest.split(":", 1)[1]

    def layer_path(self, layer_digest: str) -> Path:
        return self.layer_dir / layer_digest.split(":", 1)[1]

    def sweep(self) -> None:
        """Remove half-built trees left by a crash (only ever under a ``.tmp-`` name)."""
        for directory in (self.layer_dir, self.rootfs_dir):
            for entry in directory.iterdir():
                if entry.name.startswith(".tmp-"):
                    shutil.rmtree(entry, ignore_errors=True)

    def layer(self, digest: str, blob: Path, budget: Budget) -> Path:
        """The unpacked layer, unpacking it first if no image has needed it yet."""
        final = self.layer_path(digest)
        with self._lock(digest):
            if final.is_dir():
                budget.spend(_recorded_size(final))
                return final
            tmp = self.layer_dir / f".tmp-{secrets.token_hex(8)}"
            (tmp / "tree").mkdir(parents=True)
            try:
                result = unpack_layer(blob, tmp / "tree", digest, budget)
                for note in result.skipped:
                    log.info("layer %s: skipped %s", digest, note)
                record = {"whiteouts": result.whiteouts, "opaque": result.opaque_dirs, "size": result.size}
                (tmp / "layer.json").write_text(json.dumps(record))
                _publish(tmp, final)
            except BaseException:
                shutil.rmtree(tmp, ignore_errors=True)
                raise
            return final

    def assemble(self, manifest_digest: str, layers: Iterable[tuple[str, Path]], budget: Budget) -> Path:
        """The image's rootfs, built once per manifest digest from the (cached) layers in order."""
        final = self.rootfs_path(manifest_digest)
        with self._lock(manifest_digest):
            if final.is_dir():
                return final
            tmp = self.rootfs_dir / f".tmp-{secrets.token_hex(8)}"
            tmp.mkdir(mode=0o755)
            try:
                for digest, blob in layers:
                    layer = self.layer(digest, blob, budget)
                    _apply(layer, tmp)
                os.chmod(tmp, 0o755)
                _publish(tmp, final)
            except BaseException:
                shutil.rmtree(tmp, ignore_errors=True)
                raise
            return final

    def collect(self, keep_rootfs: set[str], keep_layers: set[str], grace_s: float = 0.0) -> tuple[int, int]:
        """Delete assembled images and unpacked layers nothing references and older than ``grace_s``; returns
        (rootfs, layers) removed."""
        removed = [0, 0]
        now = time.time()
        for index, (directory, keep) in enumerate(((self.rootfs_dir, keep_rootfs), (self.layer_dir, keep_layers))):
            wanted = {digest.split(":", 1)[1] for digest in keep}
            for entry in directory.iterdir():
                if entry.name.startswith(".tmp-") or entry.name in wanted:
                    continue
                if now - entry.stat().st_mtime < grace_s:
                    continue
                with self._lock("sha256:" + entry.name):
                    shutil.rmtree(entry, ignore_errors=True)
                removed[index] += 1
        return removed[0], removed[1]


def _publish(tmp: Path, final: Path) -> None:
    """Rename a finished tree into place; another process that finished the same digest first wins."""
    try:
        os.rename(tmp, final)
    except OSError:
        if not final.is_dir():
            raise
        shutil.rmtree(tmp, ignore_errors=True)


def _recorded_size(layer: Path) -> int:
    try:
        return int(json.loads((layer / "layer.json").read_text()).get("size", 0))
    except (OSError, ValueError):
        return 0


def _apply(layer: Path, rootfs: Path) -> None:
    """Apply one layer on the rootfs: its whiteouts first (they hide lower layers only), then its entries."""
    record = json.loads((layer / "layer.json").read_text())
    for opaque in record["opaque"]:
        directory = _inside(rootfs, opaque) if opaque else rootfs
        if directory is not None and directory.is_dir() and not directory.is_symlink():
            for child in list(directory.iterdir()):
                remove(child)
    for hidden in record["whiteouts"]:
        path = _inside(rootfs, hidden)
        if path is not None:
            remove(path)
    _merge(layer / "tree", rootfs)


def _inside(rootfs: Path, relative: str) -> Path | None:
    """``relative`` under the rootfs if every parent is a real directory there (else there is nothing to remove)."""
    parent = _parent(rootfs, relative, create=False)
    return None if parent is None else parent / posixpath.basename(relative)


def _merge(source: Path, dest: Path) -> None:
    """Hard-link the layer tree into the rootfs: directories merge, anything else replaces what was there."""
    for entry in os.scandir(source):
        target = dest / entry.name
        info = entry.stat(follow_symlinks=False)
        try:
            existing = os.lstat(target)
        except FileNotFoundError:
            existing = None
        if stat.S_ISDIR(info.st_mode):
            if existing is not None and not stat.S_ISDIR(existing.st_mode):
                remove(target)
                existing = None
            if existing is None:
                os.mkdir(target, 0o755)
            _merge(Path(entry.path), target)
            continue
        if existing is not None:
            remove(target)
        if stat.S_ISLNK(info.st_mode):
            os.symlink(os.readlink(entry.path), target)
        elif stat.S_ISREG(info.st_mode):
            try:
                os.link(entry.path, target, follow_symlinks=False)
            except OSError:  # a file system without hard links (or at a link-count limit): a copy does the same
                shutil.copy2(entry.path, target, follow_symlinks=False)
        else:
            raise ImageError(f"unexpected entry type in layer store: {entry.path}")
