"""OCI and Docker v2 schema 2 manifests and indexes: what they reference, which platform to run, the image config."""

from __future__ import annotations

import json
import platform
from dataclasses import dataclass
from typing import Any

from hangar.artifacts.images.blobs import DIGEST
from hangar.artifacts.images.errors import RegistryError

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
DOCKER_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
MANIFEST_TYPES = (OCI_MANIFEST, DOCKER_MANIFEST)
INDEX_TYPES = (OCI_INDEX, DOCKER_LIST)
ALL_TYPES = MANIFEST_TYPES + INDEX_TYPES
MAX_MANIFEST_BYTES = 4 * 1024 * 1024  # what distribution registries accept

_ARCH = {
    "x86_64": "amd64",
    "amd64": "amd64",
    "aarch64": "arm64",
    "arm64": "arm64",
    "armv7l": "arm",
    "ppc64le": "ppc64le",
}


def host_architecture() -> str:
    """The host's architecture in OCI terms (linux/<arch>)."""
    machine = platform.machine().lower()
    return _ARCH.get(machine, machine)


@dataclass(frozen=True)
class Descriptor:
    media_type: str
    digest: str
    size: int
    platform: dict[str, Any] | None = None


@dataclass(frozen=True)
class Manifest:
    """A parsed manifest or index: ``media_type`` decides which of ``layers``/``manifests`` is meaningful."""

    media_type: str
    config: Descriptor | None
    layers: tuple[Descriptor, ...]
    manifests: tuple[Descriptor, ...]
    artifact_type: str | None
    subject: str | None

    @property
    def is_index(self) -> bool:
        return self.media_type in INDEX_TYPES

    def references(self) -> list[Descriptor]:
        """Every blob (config and layers) this manifest needs; for an index, the child manifests."""
        if self.is_index:
            return list(self.manifests)
        return ([self.config] if self.config is not None else []) + list(self.layers)

    def total_size(self) -> int:
        return sum(d.size for d in self.references())


def _descriptor(value: Any, what: str) -> Descriptor:
    if not isinstance(value, dict):
        raise RegistryError("MANIFEST_INVALID", f"{what} is not a descriptor object")
    digest, size, media_type = value.get("digest"), value.get("size"), value.get("mediaType", "")
    if not isinstance(digest, str) or not DIGEST.match(digest):
        raise RegistryError("MANIFEST_INVALID", f"{what} has no valid sha256 digest")
    if not isinstance(size, int) or isinstance(size, bool) or size < 0:
        raise RegistryError("MANIFEST_INVALID", f"{what} has no valid size")
    if not isinstance(media_type, str):
        raise RegistryError("MANIFEST_INVALID", f"{what} has an invalid mediaType")
    found = value.get("platform")
    return Descriptor(media_type, digest, size, found if isinstance(found, dict) else None)


def parse_manifest(body: bytes, content_type: str | None) -> Manifest:
    """Parse and check a pushed or pulled manifest; the media type comes from the body, else the Content-Type."""
    if len(body) > MAX_MANIFEST_BYTES:
        raise RegistryError("SIZE_INVALID", f"manifest exceeds {MAX_MANIFEST_BYTES} bytes", 400)
    try:
        document = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        raise RegistryError("MANIFEST_INVALID", "manifest is not JSON") from None
    if not isinstance(document, dict):
        raise RegistryError("MANIFEST_INVALID", "manifest is not a JSON object")
    media_type = document.get("mediaType") or (content_type or "").split(";")[0].strip()
    if media_type not in ALL_TYPES:
        if "manifests" in document:
            media_type = OCI_INDEX
        elif "layers" in document:
            media_type = OCI_MANIFEST
        else:
            raise RegistryError("MANIFEST_INVALID", f"unsupported manifest media type {media_type!r}")
    if document.get("schemaVersion") != 2:
        raise RegistryError("MANIFEST_INVALID", "schemaVersion must be 2")
    subject = document.get("subject")
    subject_digest = _descriptor(subject, "subject").digest if subject is not None else None
    artifact_type = document.get("artifactType") if isinstance(document.get("artifactType"), str) else None
    if media_type in INDEX_TYPES:
        children = document.get("manifests")
        if not isinstance(children, list):
            raise RegistryError("MANIFEST_INVALID", "an index needs a manifests list")
        manifests = tuple(_descriptor(c, f"manifests[{i}]") for i, c in enumerate(children))
        return Manifest(media_type, None, (), manifests, artifact_type, subject_digest)
    layers = document.get("layers")
    if not isinstance(layers, list):
        raise RegistryError("MANIFEST_INVALID", "an image manifest needs a layers list")
    config = _descriptor(document.get("config"), "config")
    parsed = tuple(_descriptor(layer, f"layers[{i}]") for i, layer in enumerate(layers))
    artifact_type = artifact_type or (
        config.media_type if not config.media_type.endswith("image.config.v1+json") else None
    )
    return Manifest(media_type, config, parsed, (), artifact_type, subject_digest)


def pick_platform(index: Manifest, architecture: str) -> Descriptor:
    """The linux/<architecture> entry of an index (attestations and other OSes skipped)."""
    seen: list[str] = []
    for child in index.manifests:
        found = child.platform or {}
        os_name, arch = found.get("os", ""), found.get("architecture", "")
        if os_name == "unknown" or arch == "unknown":
            continue  # buildkit attestation manifests
        seen.append(f"{os_name}/{arch}" + (f"/{found['variant']}" if found.get("variant") else ""))
        if os_name == "linux" and arch == architecture:
            return child
    listed = ", ".join(seen) or "none"
    raise RegistryError(
        "MANIFEST_UNKNOWN",
        f"the image index has no linux/{architecture} image (host architecture {architecture}; index offers {listed})",
        404,
    )


@dataclass(frozen=True)
class RunConfig:
    """The parts of an image config a session honours."""

    architecture: str
    os: str
    entrypoint: tuple[str, ...]
    cmd: tuple[str, ...]
    env: tuple[tuple[str, str], ...]
    working_dir: str
    user: str
    exposed_ports: tuple[str, ...]
    diff_ids: tuple[str, ...]


def _strings(value: Any) -> tuple[str, ...]:
    if isinstance(value, list) and all(isinstance(item, str) for item in value):
        return tuple(value)
    return ()


def _object(value: Any) -> dict[str, Any]:
    """A JSON object, or an empty one for anything else (a missing or malformed section reads as empty)."""
    return value if isinstance(value, dict) else {}


def parse_config(body: bytes) -> RunConfig:
    try:
        document = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        raise RegistryError("MANIFEST_INVALID", "the image config is not JSON") from None
    if not isinstance(document, dict):
        raise RegistryError("MANIFEST_INVALID", "the image config is not a JSON object")
    config = _object(document.get("config"))
    env: list[tuple[str, str]] = []
    for item in _strings(config.get("Env")):
        name, _, value = item.partition("=")
        if name:
            env.append((name, value))
    rootfs = _object(document.get("rootfs"))
    ports = _object(config.get("ExposedPorts"))
    return RunConfig(
        architecture=str(document.get("architecture") or ""),
        os=str(document.get("os") or ""),
        entrypoint=_strings(config.get("Entrypoint")),
        cmd=_strings(config.get("Cmd")),
        env=tuple(env),
        working_dir=str(config.get("WorkingDir") or "/"),
        user=str(config.get("User") or ""),
        exposed_ports=tuple(sorted(str(p) for p in ports)),
        diff_ids=_strings(rootfs.get("diff_ids")),
    )
