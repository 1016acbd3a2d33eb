"""Image references as Docker and ECR read them: ``[registry/]repository[:tag][@digest]``."""

from __future__ import annotations

import re
from dataclasses import dataclass

from hangar.artifacts.images.errors import ImageError

DOCKER_HUB = "registry-1.docker.io"
REPOSITORY = re.compile(r"^[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*(?:/[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*)*$")
TAG = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9._-]{0,127}$")
ECR_HOST = re.compile(r"^(\d{12})\.dkr\.ecr\.([a-z0-9-]+)\.amazonaws\.com$")


@dataclass(frozen=True)
class Reference:
    registry: str  # host[:port]; DOCKER_HUB for short names
    repository: str
    tag: str | None
    digest: str | None

    @property
    def reference(self) -> str:
        """What to ask the registry for: the digest when pinned, else the tag."""
        return self.digest or self.tag or "latest"

    def pinned(self, digest: str) -> str:
        return f"{self.registry}/{self.repository}@{digest}"

    def ecr_account_region(self) -> tuple[str, str] | None:
        found = ECR_HOST.match(self.registry)
        return None if found is None else (found.group(1), found.group(2))


def parse_reference(text: str) -> Reference:
    rest, _, digest = text.partition("@")
    if digest and not re.match(r"^sha256:[0-9a-f]{64}$", digest):
        raise ImageError(f"image reference {text[:300]!r} has an unsupported digest (sha256 only)")
    first, slash, remainder = rest.partition("/")
    if slash and ("." in first or ":" in first or first == "localhost"):
        registry, path = first, remainder
    else:
        registry, path = DOCKER_HUB, rest
    tag = None
    if ":" in path.rsplit("/", 1)[-1]:
        path, _, tag = path.rpartition(":")
        if not TAG.match(tag):
            raise ImageError(f"image reference {text[:300]!r} has an invalid tag")
    if registry == DOCKER_HUB and "/" not in path:
        path = f"library/{path}"
    if not REPOSITORY.match(path) or len(path) > 256:
        raise ImageError(f"image reference {text[:300]!r} has an invalid repository name")
    if tag is None and not digest:
        tag = "latest"
    return Reference(registry, path, tag, digest or None)
