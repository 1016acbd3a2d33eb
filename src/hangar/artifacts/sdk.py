"""``hangar.sdk`` inside every environment: agents import it without listing it in their requirements.

The SDK is copied from the installed ``hangar`` package (it imports only starlette and uvicorn), with an empty
``hangar/__init__.py`` above it; its dependencies are installed with the ranges Hangar itself declares, unless
the agent's requirements already brought them. ``websockets`` is among them because uvicorn serves the contract's
``/ws`` route only when a WebSocket library is installed (without one it answers 404 to every upgrade).
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import importlib.util
import re
import shutil
from pathlib import Path

from hangar.artifacts.api import BuildError

SDK_DEPENDENCIES = ("starlette", "uvicorn", "websockets")
DISTRIBUTION = "hangar-runtime"
_REQUIREMENT = re.compile(r"^\s*([A-Za-z0-9][A-Za-z0-9._-]*)\s*(\[[^\]]*\])?\s*([^;]*)(;.*)?$")


def sdk_source() -> Path:
    spec = importlib.util.find_spec("hangar.sdk")
    if spec is None or not spec.submodule_search_locations:
        raise BuildError("the hangar.sdk package is missing from this Hangar installation")
    return Path(next(iter(spec.submodule_search_locations)))


def sdk_requirements() -> dict[str, str]:
    """{"starlette": "starlette<2,>=0.46", ...}: the ranges from Hangar's own package metadata."""
    try:
        declared = importlib.metadata.requires(DISTRIBUTION) or []
    except importlib.metadata.PackageNotFoundError as exc:
        raise BuildError(f"cannot read {DISTRIBUTION}'s metadata to find the SDK's dependencies") from exc
    found: dict[str, str] = {}
    for line in declared:
        match = _REQUIREMENT.match(line)
        if match and not match.group(4) and _normal(match.group(1)) in SDK_DEPENDENCIES:
            found[_normal(match.group(1))] = f"{match.group(1)}{match.group(3).strip()}"
    missing = [name for name in SDK_DEPENDENCIES if name not in found]
    if missing:
        raise BuildError(f"{DISTRIBUTION} does not declare the SDK dependencies {', '.join(missing)}")
    return found


def sdk_files() -> list[Path]:
    root = sdk_source()
    return sorted(p for p in root.rglob("*.py") if "__pycache__" not in p.relative_to(root).parts)


def sdk_fingerprint() -> str:
    """Changes whenever the SDK's code or its dependency ranges change, so environments are rebuilt."""
    digest = hashlib.sha256()
    root = sdk_source()
    for path in sdk_files():
        digest.update(path.relative_to(root).as_posix().encode() + b"\0" + path.read_bytes() + b"\0")
    for requirement in sorted(sdk_requirements().values()):
        digest.update(requirement.encode() + b"\0")
    return digest.hexdigest()


def missing_sdk_dependencies(site_packages: Path) -> list[str]:
    """The SDK's requirement specs whose distribution the environment does not have yet."""
    installed = {_normal(p.name.split("-", 1)[0]) for p in site_packages.glob("*.dist-info")}
    return [spec for name, spec in sdk_requirements().items() if name not in installed]


def install_sdk(site_packages: Path) -> None:
    """Copy the SDK into ``site_packages/hangar/sdk`` under an empty ``hangar/__init__.py``."""
    package = site_packages / "hangar"
    if package.exists():
        raise BuildError("the requirements install a package named 'hangar', which would hide hangar.sdk")
    root = sdk_source()
    for path in sdk_files():
        target = package / "sdk" / path.relative_to(root)
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(path, target)
    (package / "__init__.py").write_text("")


def _normal(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()
