"""Container-image versions on a ``hangar node``: pull the image the gateway resolved, unpack it locally.

The gateway recorded the version's manifest digest when it prepared it; the node asks for exactly that digest, so
the node's rootfs (``<data dir>/images/rootfs/<digest>``) is keyed and built as on a single server, even if the tag
moved since. An image in Hangar's own ECR is read from the gateway's ``/v2`` API (HTTP Basic ``AWS`` + a
GetAuthorizationToken password, made with the credentials the node already uses for the gateway's S3); an image
from an external registry is pulled from that registry by the node itself (``HANGAR_REGISTRY_AUTH`` and
``HANGAR_INSECURE_REGISTRIES`` of the node), since the gateway's ``/v2`` serves only its own repositories. Every
digest is verified by the ordinary image code; concurrent preparations of one image share a single pull.
"""

from __future__ import annotations

import base64
import dataclasses
import threading
from collections.abc import Callable
from typing import Any
from urllib.parse import urlsplit

from hangar.artifacts.images.pull import RemoteRegistry
from hangar.artifacts.images.reference import parse_reference
from hangar.config import Settings
from hangar.control.images import ImagePreparer
from hangar.control.registry import Registry
from hangar.domain.errors import HangarError, ServiceUnavailableError
from hangar.domain.invocation import PreparedVersion
from hangar.domain.runtime import RuntimeSpec
from hangar.store.transactions import Store


class NodeImages:
    """The node's image store and the way to the gateway's registry; one pull per image at a time."""

    def __init__(self, settings: Settings, store: Store, gateway: str) -> None:
        self.settings = settings
        self.gateway = gateway
        self._store = store
        self._registry: Registry | None = None
        self._lock = threading.Lock()
        self._pulls: dict[str, threading.Lock] = {}
        self._ecr: Any = None

    def prepare(self, spec: RuntimeSpec, manifest_digest: str | None) -> PreparedVersion:
        """The version's image, runnable here (blocking: a worker thread)."""
        uri = spec.container_uri
        if uri is None:
            raise ServiceUnavailableError("the version has neither code nor a containerUri")
        with self._lock:
            if self._registry is None:
                self._registry = Registry(self.settings, self._store)
                self._registry.sweep()  # what a killed node left half-written
            registry = self._registry
            pull = self._pulls.setdefault(manifest_digest or uri, threading.Lock())
        preparer = _GatewayImagePreparer(registry, self.gateway, self._password, manifest_digest)
        try:
            with pull:  # a second version of the same image waits for the first pull, then finds it all here
                return preparer.prepare(uri)
        except HangarError as exc:
            raise ServiceUnavailableError(f"this node cannot prepare the image {uri}: {exc.message}") from None

    def _password(self) -> str:
        """A fresh registry password from the gateway's GetAuthorizationToken (they expire; asking is cheap)."""
        with self._lock:
            if self._ecr is None:
                import botocore.session

                self._ecr = botocore.session.get_session().create_client(
                    "ecr", endpoint_url=self.gateway, region_name=self.settings.region
                )
            client = self._ecr
        try:
            token = client.get_authorization_token()["authorizationData"][0]["authorizationToken"]
        except Exception as exc:  # botocore's errors: the reason, as a 503 the gateway can retry
            raise ServiceUnavailableError(f"cannot get a registry password from the gateway: {exc}") from None
        return base64.b64decode(token).decode().partition(":")[2]


class _GatewayImagePreparer(ImagePreparer):
    """``ImagePreparer`` whose "own registry" is the gateway's ``/v2``, pinned to the gateway's manifest digest."""

    def __init__(
        self, registry: Registry, gateway: str, password: Callable[[], str], manifest_digest: str | None
    ) -> None:
        super().__init__(registry)
        self.gateway = urlsplit(gateway)
        self.password = password
        self.manifest_digest = manifest_digest

    def _prepare(self, container_uri: str) -> PreparedVersion:
        ref = parse_reference(container_uri)
        if self.manifest_digest is not None:
            ref = dataclasses.replace(ref, digest=self.manifest_digest)
        if ref.registry == self.registry.host:
            remote = RemoteRegistry(self.gateway.netloc, ("AWS", self.password()), insecure=False)
            remote.scheme = self.gateway.scheme or "http"
        else:
            remote = self._remote(ref.registry)
        return self._pull(ref, remote)
