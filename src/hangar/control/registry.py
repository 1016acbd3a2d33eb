"""Hangar's own registry: repositories, manifests and tags over the blob store (the use cases behind ``/v2`` and
the ECR API). Blob bytes live on disk (``artifacts.images.blobs``); rows in the store (``store.images``).

A manifest is accepted only when everything it references is already here (blobs with the declared size, child
manifests of an index) and its image is within the size limit, so a pulled or prepared image never meets a
missing or lying piece that the push could have caught.
"""

from __future__ import annotations

import json
import logging
import re
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from functools import partial
from typing import Any

from hangar.artifacts.images.blobs import DIGEST, BlobStore, sha256_digest
from hangar.artifacts.images.errors import EcrError, RegistryError, manifest_unknown, name_unknown
from hangar.artifacts.images.manifests import parse_manifest
from hangar.artifacts.images.reference import TAG
from hangar.artifacts.images.rootfs import RootfsStore
from hangar.config import Settings
from hangar.store import images as rows
from hangar.store.transactions import Store, utcnow

log = logging.getLogger("hangar.images")

GC_GRACE_S = 600.0
ECR_REPOSITORY = re.compile(r"^(?:[a-z0-9]+(?:[._-][a-z0-9]+)*/)*[a-z0-9]+(?:[._-][a-z0-9]+)*$")


@dataclass(frozen=True)
class StoredManifest:
    body: bytes
    media_type: str
    digest: str


class Registry:
    def __init__(self, settings: Settings, store: Store) -> None:
        self.settings = settings
        self.store = store
        root = settings.data_dir.resolve() / "images"
        self._gc = threading.Condition()
        self._preparing = 0
        self._collecting = False
        self.blobs = BlobStore(root)
        self.rootfs = RootfsStore(root)

    @property
    def host(self) -> str:
        """The ECR host name that means "this Hangar" in a containerUri or repositoryUri."""
        return f"{self.settings.account_id}.dkr.ecr.{self.settings.region}.amazonaws.com"

    def arn(self, name: str) -> str:
        return f"arn:aws:ecr:{self.settings.region}:{self.settings.account_id}:repository/{name}"

    # -- repositories --------------------------------------------------------------------------------------

    def create_repository(self, name: str) -> rows.RepositoryRow:
        check_repository_name(name)

        def create(conn: Any) -> rows.RepositoryRow:
            if rows.get_repository(conn, name) is not None:
                raise EcrError(
                    "RepositoryAlreadyExistsException",
                    f"The repository with name '{name}' already exists in the registry with id "
                    f"'{self.settings.account_id}'",
                )
            return rows.create_repository(conn, name, utcnow())

        return self.store.write(create)

    def repositories(self, names: list[str] | None) -> list[rows.RepositoryRow]:
        found = self.store.read(lambda conn: rows.list_repositories(conn, names))
        if names is not None:
            missing = sorted(set(names) - {r.name for r in found})
            if missing:
                raise self._no_repository(missing[0])
        return found

    def delete_repository(self, name: str, force: bool) -> rows.RepositoryRow:
        def delete(conn: Any) -> rows.RepositoryRow:
            found = rows.get_repository(conn, name)
            if found is None:
                raise self._no_repository(name)
            if not force and rows.count_manifests(conn, name):
                raise EcrError(
                    "RepositoryNotEmptyException",
                    f"The repository with name '{name}' in registry with id '{self.settings.account_id}' cannot "
                    "be deleted because it still contains images",
                )
            rows.delete_repository(conn, name)
            return found

        return self.store.write(delete)

    def _no_repository(self, name: str) -> EcrError:
        return EcrError(
            "RepositoryNotFoundException",
            f"The repository with name '{name}' does not exist in the registry with id '{self.settings.account_id}'",
        )

    def require_repository(self, name: str, *, ecr: bool = False) -> None:
        if self.store.read(lambda conn: rows.get_repository(conn, name)) is None:
            raise self._no_repository(name) if ecr else name_unknown(name)

    def images(self, name: str) -> list[rows.ManifestRow]:
        self.require_repository(name, ecr=True)
        return self.store.read(lambda conn: rows.list_manifests(conn, name))

    # -- manifests and tags --------------------------------------------------------------------------------

    def put_manifest(self, repository: str, reference: str, body: bytes, content_type: str | None) -> str:
        """Store a pushed manifest under its digest and, when ``reference`` is a tag, point the tag at it."""
        self.require_repository(repository)
        digest = sha256_digest(body)
        if reference.startswith("sha256:"):
            if reference != digest:
                raise RegistryError("DIGEST_INVALID", f"manifest digest {digest} does not match {reference}")
        elif not TAG.match(reference):
            raise RegistryError("TAG_INVALID", f"invalid tag {reference[:200]!r}")
        manifest = parse_manifest(body, content_type)
        size = manifest.total_size()
        if not manifest.is_index and size > self.settings.image_max_bytes:
            raise RegistryError(
                "SIZE_INVALID",
                f"the image declares {size} bytes of config and layers; the limit is {self.settings.image_max_bytes}"
                " (AgentCore's 2 GB image limit)",
            )
        for ref in manifest.references():
            if manifest.is_index:
                if not self.store.read(partial(rows.get_manifest, repository=repository, digest=ref.digest)):
                    raise RegistryError("MANIFEST_BLOB_UNKNOWN", f"manifest {ref.digest} of the index is not pushed")
            elif not self.blobs.exists(ref.digest):
                raise RegistryError("MANIFEST_BLOB_UNKNOWN", f"blob unknown to registry: {ref.digest}")
            elif self.blobs.size(ref.digest) != ref.size:
                raise RegistryError(
                    "MANIFEST_INVALID",
                    f"descriptor of {ref.digest} declares {ref.size} bytes, the blob has {self.blobs.size(ref.digest)}",
                )
        self.blobs.put_bytes(body, digest)
        row = rows.ManifestRow(
            repository=repository,
            digest=digest,
            media_type=manifest.media_type,
            artifact_type=manifest.artifact_type,
            subject=manifest.subject,
            size=len(body),
            image_size=size,
            pushed_at=utcnow(),
        )

        def save(conn: Any) -> None:
            rows.put_manifest(conn, row)
            if not reference.startswith("sha256:"):
                rows.set_tag(conn, repository, reference, digest, utcnow())

        self.store.write(save)
        return digest

    def resolve(self, repository: str, reference: str) -> str:
        """The manifest digest a tag or digest names in this repository."""
        if reference.startswith("sha256:"):
            if not DIGEST.match(reference):
                raise RegistryError("DIGEST_INVALID", "invalid digest")
            found = self.store.read(lambda conn: rows.get_manifest(conn, repository, reference))
            digest = None if found is None else found.digest
        else:
            digest = self.store.read(lambda conn: rows.resolve_tag(conn, repository, reference))
        if digest is None:
            self.require_repository(repository)
            raise manifest_unknown(reference)
        return digest

    def get_manifest(self, repository: str, reference: str) -> StoredManifest:
        digest = self.resolve(repository, reference)
        found = self.store.read(lambda conn: rows.get_manifest(conn, repository, digest))
        if found is None:
            raise manifest_unknown(reference)
        body = self.blobs.read(digest)
        if sha256_digest(body) != digest:  # never serve bytes that do not match their name
            raise RegistryError("MANIFEST_UNKNOWN", f"manifest {digest} is damaged on disk", 500)
        return StoredManifest(body, found.media_type, digest)

    def delete_manifest(self, repository: str, reference: str) -> None:
        """By digest: the manifest and its tags go; by tag: only the tag (OCI distribution semantics)."""
        digest = self.resolve(repository, reference)
        if reference.startswith("sha256:"):
            self.store.write(lambda conn: rows.delete_manifest(conn, repository, digest))
        else:
            self.store.write(lambda conn: rows.delete_tag(conn, repository, reference))

    def tags(self, repository: str) -> list[str]:
        self.require_repository(repository)
        return self.store.read(lambda conn: rows.list_tags(conn, repository))

    def has_blob(self, repository: str, digest: str) -> bool:
        self.require_repository(repository)
        return self.blobs.exists(digest)

    # -- garbage collection ----------------------------------------------------------------------------------

    @contextmanager
    def preparing(self) -> Iterator[None]:
        """Held while a version is prepared: garbage collection waits for it (and it for a collection)."""
        with self._gc:
            self._gc.wait_for(lambda: not self._collecting)
            self._preparing += 1
        try:
            yield
        finally:
            with self._gc:
                self._preparing -= 1
                self._gc.notify_all()

    def collect_garbage(self, grace_s: float = GC_GRACE_S) -> dict[str, int]:
        """Delete blobs no manifest references, and rootfs trees and layers no version or tagged image needs.
        Anything younger than ``grace_s`` stays: a blob of a push in progress, a version just prepared."""
        with self._gc:
            self._gc.wait_for(lambda: self._preparing == 0 and not self._collecting)
            self._collecting = True
        try:
            return self._collect(grace_s)
        finally:
            with self._gc:
                self._collecting = False
                self._gc.notify_all()

    def _collect(self, grace_s: float) -> dict[str, int]:
        manifests, images = self.store.read(lambda conn: (rows.all_manifest_digests(conn), rows.version_images(conn)))
        keep_blobs: set[str] = set(manifests)
        keep_layers: set[str] = set()
        keep_rootfs: set[str] = set()
        for digest in manifests:
            try:
                manifest = parse_manifest(self.blobs.read(digest), None)
            except Exception:
                continue
            keep_blobs.update(d.digest for d in manifest.references())
        for image in images:
            keep_rootfs.add(str(image.get("manifestDigest")))
            layers = [str(d) for d in image.get("layers") or ()]
            keep_layers.update(layers)
            keep_blobs.update(layers)
        removed_blobs = 0
        now = time.time()
        for digest in list(self.blobs.digests()):
            if digest not in keep_blobs and now - self.blobs.mtime(digest) >= grace_s:
                self.blobs.delete(digest)
                removed_blobs += 1
        removed_rootfs, removed_layers = self.rootfs.collect(keep_rootfs, keep_layers, grace_s)
        result = {"blobs": removed_blobs, "layers": removed_layers, "rootfs": removed_rootfs}
        log.info("image garbage collection removed %s", json.dumps(result))
        return result

    def sweep(self) -> None:
        """At start: drop what a crash left half-written (temporary blobs, half-unpacked trees)."""
        self.blobs.sweep()
        self.rootfs.sweep()


def check_repository_name(name: str) -> None:
    if not (2 <= len(name) <= 256) or not ECR_REPOSITORY.match(name):
        raise EcrError(
            "InvalidParameterException",
            f"Invalid parameter at 'repositoryName' failed to satisfy constraint: 'must satisfy regular expression "
            f"'{ECR_REPOSITORY.pattern}'' and have length between 2 and 256 (got {name[:300]!r})",
        )
