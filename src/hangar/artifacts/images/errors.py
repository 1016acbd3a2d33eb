"""Errors of the image store. Registry (``/v2``) errors carry an OCI distribution code; ECR errors an ECR type."""

from __future__ import annotations

from hangar.domain.errors import HangarError


class RegistryError(HangarError):
    """An OCI distribution API error: rendered as ``{"errors": [{"code", "message"}]}`` by gateway/registry.py."""

    def __init__(self, code: str, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.oci_code = code
        self.status = status


class EcrError(HangarError):
    """An ECR JSON-protocol error: ``__type`` in the body names the modeled exception."""

    def __init__(self, code: str, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.code = code
        self.status = status

    def body(self) -> dict[str, object]:
        return {"__type": self.code, "message": self.message}


class ImageError(HangarError):
    """An image cannot be made runnable (hostile layer, lying digest, too big, wrong architecture, unreachable)."""

    code = "ValidationException"
    status = 400


def blob_unknown(digest: str) -> RegistryError:
    return RegistryError("BLOB_UNKNOWN", f"blob unknown to registry: {digest}", 404)


def manifest_unknown(reference: str) -> RegistryError:
    return RegistryError("MANIFEST_UNKNOWN", f"manifest unknown: {reference}", 404)


def name_unknown(name: str) -> RegistryError:
    return RegistryError("NAME_UNKNOWN", f"repository name not known to registry: {name}", 404)
