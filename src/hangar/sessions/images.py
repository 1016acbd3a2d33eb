"""A version made from a container image, as a sandbox spec: the image's rootfs as ``/``, its argv, ``User``,
``WorkingDir`` and ``Env`` (the runtime's environment variables and Hangar's contract ones on top)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from hangar.domain.errors import RuntimeClientError
from hangar.domain.invocation import ImageConfig

# Sessions of an image start cold for now: the zygote would have to run under the image's own interpreter, with
# the session's overlay set up in the forked child; this says so in every such session's coldReason.
IMAGE_COLD_REASON = "image sessions start cold: forking from a warm template is not supported for images yet"


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
