"""A version made from a container image, as a sandbox spec: the image's rootfs as ``/``, its argv, ``User``,
``WorkingDir`` and ``Env`` (the runtime's environment variables and Hangar's contract ones on top)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from hangar.domain.errors import RuntimeClientError
from hangar.domain.invocation import ImageConfig

# Sessions of an image start cold: a fork would need the zygote, isolate.py and the supervisor running under the
# image's own Python (3.11+) and, per fork, a writable overlay of its own, built by the host with a lower layer
# ID-mapped to the fork's leased uid and moved into the fork's mount namespace before it pivots into it. That path is
# not built yet; this says so in every such session's coldReason (docs/images.md, "Sessions of images").
IMAGE_COLD_REASON = "image sessions start cold: forking an image's rootfs is not built yet"


def image_fields(image: ImageConfig, environment: Mapping[str, str]) -> dict[str, Any]:
    """The ``SandboxSpec`` fields that differ for an image (``environment``: what Hangar adds on top of Env)."""
    argv = image.argv()
    if not argv:
        raise RuntimeClientError(f"The image {image.reference} has neither an Entrypoint nor a Cmd to run")
    texts = [*argv, image.user, image.working_dir, *(part for pair in image.env for part in pair)]
    if any("\0" in text for text in texts) or any(not key or "=" in key for key, _ in image.env):
        raise RuntimeClientError(f"The image {image.reference} has a NUL character or a malformed name in its config")
    return {
        "code_dir": image.rootfs,
        "env_dir": image.rootfs,
        "command": argv,
        "environment": {**dict(image.env), **environment},
        "rootfs": image.rootfs,
        "user": image.user,
        "workdir": image.working_dir or "/",
    }
