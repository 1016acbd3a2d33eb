"""A version made from a container image, as a sandbox spec: the image's rootfs as ``/``, its argv, ``User``,
``WorkingDir`` and ``Env`` (the runtime's environment variables and Hangar's contract ones on top)."""

from __future__ import annotations

import functools
import posixpath
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from hangar.domain.errors import RuntimeClientError
from hangar.domain.invocation import ImageConfig
from hangar.sandbox.namespace import image_root
from hangar.sandbox.supervised import IMAGE_PATH

# Sessions of an image fork from a warm template when its entry point is ``python3.X script.py`` with X >= 11: the
# zygote, isolate.py and the supervisor then run on the image's own interpreter in every fork (docs/images.md,
# "Sessions of images: forks"). Any other entry point starts cold, and says so in every such session's coldReason.
IMAGE_COLD_REASON = "image sessions start cold: only an image whose entry point is Python 3.11+ running a script forks"


def image_cold_reason(image: ImageConfig) -> str | None:
    """Why sessions of ``image`` cannot fork from a warm template (None: they can). Read from the image's files, once
    per rootfs (immutable: a version's rootfs is content-addressed)."""
    argv = image.argv()
    if len(argv) < 2 or not argv[1].endswith(".py") or not posixpath.basename(argv[0]).startswith("python"):
        return IMAGE_COLD_REASON
    return _python_reason(image.rootfs, argv[0], dict(image.env).get("PATH", IMAGE_PATH))


@functools.lru_cache(maxsize=256)
def _python_reason(rootfs: Path, program: str, path_env: str) -> str | None:
    python, why = image_root.image_python(rootfs, program, path_env)
    return None if python is not None else f"image sessions start cold: {why}"


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
