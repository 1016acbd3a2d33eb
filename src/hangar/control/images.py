"""Prepare a ``containerConfiguration`` version: resolve the containerUri to a manifest digest, pull what is
missing, verify every digest, unpack into the rootfs store, and describe the result as an ``ImageConfig``.

``<account>.dkr.ecr.<region>.amazonaws.com/<repo>`` with Hangar's own account and region names Hangar's registry
(nothing is fetched); any other reference is pulled from its registry (credentials from
``HANGAR_REGISTRY_AUTH``, TLS verified unless the host is in ``HANGAR_INSECURE_REGISTRIES``).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path

from hangar.artifacts.images.blobs import file_digest
from hangar.artifacts.images.errors import ImageError, RegistryError
from hangar.artifacts.images.manifests import Manifest, host_architecture, parse_config, parse_manifest, pick_platform
from hangar.artifacts.images.pull import RemoteRegistry
from hangar.artifacts.images.reference import Reference, parse_reference
from hangar.artifacts.images.unpack import Budget
from hangar.control.registry import Registry
from hangar.domain.invocation import ImageConfig, PreparedVersion

log = logging.getLogger("hangar.images")

IMAGE_CONFIGS = ("application/vnd.oci.image.config.v1+json", "application/vnd.docker.container.image.v1+json")

FetchManifest = Callable[[str], tuple[bytes, str, str]]  # reference -> (body, media type, digest)
FetchBlob = Callable[[str, int], None]  # digest, declared size -> blob in the store (verified)


class ImagePreparer:
    def __init__(self, registry: Registry) -> None:
        self.registry = registry
        self.settings = registry.settings

    def prepare(self, container_uri: str) -> PreparedVersion:
        try:
            with self.registry.preparing():
                return self._prepare(container_uri)
        except RegistryError as exc:
            raise ImageError(f"{container_uri}: {exc.message}") from None

    def _prepare(self, container_uri: str) -> PreparedVersion:
        ref = parse_reference(container_uri)
        if ref.registry == self.registry.host:
            return self._build(ref, self._local_manifest(ref), self._local_blob)
        if ref.ecr_account_region() is not None:
            raise ImageError(
                f"{container_uri} names another ECR registry ({ref.registry}); this Hangar is {self.registry.host}. "
                "Push the image here, or give a registry Hangar can pull from."
            )
        return self._pull(ref, self._remote(ref.registry))

    def _remote(self, host: str) -> RemoteRegistry:
        """A client for an external registry, with the credentials and TLS choice configured for that host."""
        return RemoteRegistry(host, self._credentials(host), self._insecure(host))

    def _pull(self, ref: Reference, remote: RemoteRegistry) -> PreparedVersion:
        """Build ``ref`` from what ``remote`` serves (its blobs land in our store), then close it."""
        try:
            store = self.registry.blobs
            return self._build(
                ref,
                lambda reference: remote.manifest(ref.repository, reference),
                lambda digest, size: remote.blob(ref.repository, digest, size, store),
            )
        finally:
            remote.close()

    def _local_manifest(self, ref: Reference) -> FetchManifest:
        def fetch(reference: str) -> tuple[bytes, str, str]:
            try:
                found = self.registry.get_manifest(ref.repository, reference)
            except RegistryError as exc:
                raise ImageError(f"{ref.registry}/{ref.repository}:{reference}: {exc.message}") from None
            return found.body, found.media_type, found.digest

        return fetch

    def _local_blob(self, digest: str, size: int) -> None:
        if not self.registry.blobs.exists(digest):
            raise ImageError(f"blob {digest} is not in Hangar's registry")
        if self.registry.blobs.size(digest) != size:
            raise ImageError(f"blob {digest} does not have the {size} bytes its descriptor declares")

    def _build(self, ref: Reference, fetch_manifest: FetchManifest, fetch_blob: FetchBlob) -> PreparedVersion:
        body, media_type, digest = fetch_manifest(ref.reference)
        manifest = parse_manifest(body, media_type)
        arch = host_architecture()
        if manifest.is_index:
            child = pick_platform(manifest, arch)
            body, media_type, digest = fetch_manifest(child.digest)
            manifest = parse_manifest(body, media_type)
            if manifest.is_index:
                raise ImageError("an image index points at another index; Hangar expects an image manifest there")
        self._check_size(manifest)
        assert manifest.config is not None
        if manifest.config.media_type not in IMAGE_CONFIGS:
            raise ImageError(
                f"{ref.registry}/{ref.repository}:{ref.reference} is not a container image (its config is "
                f"{manifest.config.media_type[:100]!r}; an OCI artifact cannot run as an agent)"
            )
        fetch_blob(manifest.config.digest, manifest.config.size)
        config = parse_config(self._verified(manifest.config.digest))
        if config.architecture and config.architecture != arch:
            raise ImageError(
                f"the image is built for {config.os or 'linux'}/{config.architecture}, this host runs linux/{arch}: "
                f"it would fail with 'exec format error' (rebuild with --platform linux/{arch})"
            )
        if config.os and config.os != "linux":
            raise ImageError(f"the image is built for {config.os}; Hangar runs linux images only")
        layers: list[tuple[str, Path]] = []
        built = self.registry.rootfs.rootfs_path(digest).is_dir()  # assembled earlier from verified layers
        for layer in manifest.layers:
            if not built and not self.registry.rootfs.layer_path(layer.digest).is_dir():
                fetch_blob(layer.digest, layer.size)
                self._verified(layer.digest, read=False)
            layers.append((layer.digest, self.registry.blobs.path(layer.digest)))
        budget = Budget(self.settings.image_max_unpacked_bytes)
        rootfs = self.registry.rootfs.assemble(digest, layers, budget)
        image = ImageConfig(
            rootfs=rootfs,
            manifest_digest=digest,
            reference=ref.pinned(digest),
            architecture=config.architecture or arch,
            entrypoint=config.entrypoint,
            cmd=config.cmd,
            env=config.env,
            working_dir=config.working_dir,
            user=config.user,
            exposed_ports=config.exposed_ports,
            layers=tuple(d for d, _ in layers),
        )
        log.info("prepared image %s as %s (%d layers)", ref.pinned(digest), rootfs, len(layers))
        return PreparedVersion(code_dir=rootfs, env_dir=rootfs, entry_point=(), content_hash=digest, image=image)

    def _check_size(self, manifest: Manifest) -> None:
        size = manifest.total_size()
        if size > self.settings.image_max_bytes:
            raise ImageError(
                f"the image is {size} bytes (config and layers, compressed); the limit is "
                f"{self.settings.image_max_bytes} bytes (AgentCore's 2 GB image limit)"
            )

    def _verified(self, digest: str, *, read: bool = True) -> bytes:
        """Hash the stored blob again before using it: what is unpacked is exactly what the manifest names."""
        path = self.registry.blobs.path(digest)
        if file_digest(path) != digest:
            raise ImageError(f"blob {digest} does not hash to its digest")
        return path.read_bytes() if read else b""

    def _credentials(self, host: str) -> tuple[str, str] | None:
        entry = self.settings.registry_auth.get(host)
        if not entry:
            return None
        if isinstance(entry, str):
            username, _, password = entry.partition(":")
            return username, password
        return str(entry.get("username", "")), str(entry.get("password", ""))

    def _insecure(self, host: str) -> bool:
        return host in {h.strip() for h in self.settings.insecure_registries.split(",") if h.strip()}
