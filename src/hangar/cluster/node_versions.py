"""A node's versions: (runtime, endpoint, version) → an ``InvocationTarget`` runnable on THIS node.

The gateway names the version; the node reads it from the shared store (the same PostgreSQL the gateways use) and
prepares it locally with the ordinary artifact builder into its own data dir, cached by content hash as on a single
server. The artifact's bytes come from the gateway's S3 API (``--gateway``), signed with the standard AWS
credential chain (``AWS_SHARED_CREDENTIALS_FILE`` pointing at the gateway's admin credentials, or
``AWS_ACCESS_KEY_ID``/``AWS_SECRET_ACCESS_KEY``): they are mirrored into the node's own artifact store under the
same bucket and key, so the build (and its content hash) is exactly the single-server one.

A container-image version is pulled by the manifest digest the gateway recorded when it prepared the version
(node_images.py): from the gateway's own registry (``/v2``, Basic ``AWS`` + a GetAuthorizationToken password made
with the same credentials) or, for an external registry, from that registry itself; then unpacked with the ordinary
image code into the node's ``images/`` store, so the rootfs is keyed by the same manifest digest as on the gateway.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import dataclasses
import hashlib
import json
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

from hangar.artifacts.api import BuildError
from hangar.artifacts.store import ArtifactStore, StoreError
from hangar.cluster.node_images import NodeImages
from hangar.config import Settings
from hangar.control.context import Context
from hangar.control.prepare import Preparer
from hangar.control.resolve import TargetResolver
from hangar.domain.arns import Place
from hangar.domain.errors import ConflictError, NotFoundError, ServiceUnavailableError, ValidationError
from hangar.domain.invocation import InvocationTarget, PreparedVersion
from hangar.domain.runtime import RuntimeSpec, Status
from hangar.store import endpoints as endpoint_rows
from hangar.store import runtimes as rows
from hangar.store.transactions import Store

log = logging.getLogger("hangar.cluster")

PREPARE_TIMEOUT_S = 600.0  # a first call waits this long for its version's build, then answers 503
TargetRef = tuple[str, str, int]  # runtime id, endpoint name, version number


def parse_target(header: str | None) -> TargetRef:
    """``X-Hangar-Target``: base64url JSON ``{"runtimeId", "endpointName", "version"}``."""
    if not header:
        raise ValidationError("X-Hangar-Target is missing")
    try:
        padded = header + "=" * (-len(header) % 4)
        doc = json.loads(base64.urlsafe_b64decode(padded))
        ref = (str(doc["runtimeId"]), str(doc["endpointName"]), int(doc["version"]))
    except (ValueError, KeyError, TypeError, binascii.Error):
        raise ValidationError("X-Hangar-Target is not base64url JSON with runtimeId, endpointName, version") from None
    return ref


def encode_target(runtime_id: str, endpoint_name: str, version: int | str) -> str:
    """The header value for a target (what the gateway sends)."""
    doc = {"runtimeId": runtime_id, "endpointName": endpoint_name, "version": int(version)}
    return base64.urlsafe_b64encode(json.dumps(doc).encode()).decode().rstrip("=")


class NodeVersions:
    """Resolves and prepares versions for this node; one build per version at a time, callers share it."""

    def __init__(
        self, settings: Settings, store: Store, s3_client: Callable[[], Any], gateway: str = "http://127.0.0.1:8780"
    ) -> None:
        self.settings = settings
        self.store = store
        self._s3_client = s3_client
        self._images = NodeImages(settings, store, gateway)
        self._resolver = TargetResolver(
            Context(store=store, place=Place(settings.account_id, settings.region), token_secret=b"", after_write=_no)
        )
        self._artifacts = ArtifactStore(settings.resolved_artifacts_dir)
        self._preparer = Preparer(settings, registry=None)  # code only: image versions go through NodeImages
        self._ready: dict[TargetRef, InvocationTarget] = {}
        self._building: dict[TargetRef, asyncio.Task[InvocationTarget]] = {}

    def prepared(self) -> list[InvocationTarget]:
        """Every version this node has made runnable (its templates follow these)."""
        return list(self._ready.values())

    async def target(self, ref: TargetRef) -> InvocationTarget:
        ready = self._ready.get(ref)
        if ready is not None:
            return ready
        task = self._building.get(ref)
        if task is None:
            task = asyncio.create_task(asyncio.to_thread(self._prepare, ref), name=f"prepare-{ref[0]}-{ref[2]}")
            self._building[ref] = task
            task.add_done_callback(lambda _: self._building.pop(ref, None))
        try:
            target = await asyncio.wait_for(asyncio.shield(task), PREPARE_TIMEOUT_S)
        except TimeoutError:
            raise ServiceUnavailableError(
                f"Version {ref[2]} of agent runtime {ref[0]} is still being prepared on this node; retry"
            ) from None
        self._ready[ref] = target
        return target

    def _prepare(self, ref: TargetRef) -> InvocationTarget:
        runtime_id, endpoint_name, number = ref
        runtime, version = self.store.read(
            lambda conn: (
                rows.get_runtime(conn, runtime_id),
                rows.get_version(conn, runtime_id, number),
            )
        )
        if runtime is None or runtime.status == Status.DELETING:
            raise NotFoundError(f"No agent runtime with id {runtime_id}")
        endpoint = self.store.read(lambda conn: endpoint_rows.get_endpoint(conn, runtime_id, endpoint_name))
        if endpoint is None:
            raise NotFoundError(f"Agent runtime {runtime_id} has no endpoint named {endpoint_name}")
        if version is None or version.status != Status.READY or version.prepared is None:
            raise ConflictError(f"Version {number} of agent runtime {runtime_id} is not READY")
        target = self._resolver._target(runtime, endpoint_name, version)  # the gateway's own mapping, reused
        if version.spec.code is None:
            image = version.prepared.image
            digest = image.manifest_digest if image is not None else None
            return dataclasses.replace(target, prepared=self._images.prepare(version.spec, digest))
        return dataclasses.replace(target, prepared=self._build(version.spec))

    def _build(self, spec: RuntimeSpec) -> PreparedVersion:
        code = spec.code
        assert code is not None
        self._mirror(code.bucket, code.prefix, code.version_id)  # the node's one extra step: the bytes come first
        try:
            return self._preparer.prepare_code(code)
        except BuildError as exc:
            raise ServiceUnavailableError(f"this node cannot prepare the version: {exc}") from None

    def _mirror(self, bucket: str, prefix: str, version_id: str | None) -> None:
        """Copy ``s3://bucket/prefix`` (one zip, or every object under a folder) from the gateway into this node's
        artifact store, unless this exact version is already here."""
        if version_id is not None:
            try:
                self._artifacts.get(bucket, prefix, version_id)
                return  # versions are immutable (their id is their content's hash)
            except StoreError:
                pass
        client = self._s3_client()
        with contextlib.suppress(StoreError):  # already here
            self._artifacts.create_bucket(bucket)
        try:
            if version_id is not None:
                self._fetch(client, bucket, prefix, {"VersionId": version_id})
                return
            pages = client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix)
            keys = [item["Key"] for page in pages for item in page.get("Contents", [])]
        except Exception as exc:  # botocore's errors: the reason, as a 503 the gateway can retry
            raise ServiceUnavailableError(f"cannot fetch s3://{bucket}/{prefix} from the gateway: {exc}") from None
        if not keys:
            raise ServiceUnavailableError(f"the gateway has no artifact at s3://{bucket}/{prefix}")
        wanted = {key for key in keys if key == prefix or key.startswith(prefix.rstrip("/") + "/")}
        with contextlib.suppress(StoreError):
            for stale in list(self._artifacts.list(bucket, prefix)):  # gone at the gateway: gone here too
                if stale.key not in wanted:
                    self._artifacts.delete(bucket, stale.key)
        for key in sorted(wanted):
            self._fetch(client, bucket, key, {})

    def _fetch(self, client: Any, bucket: str, key: str, extra: dict[str, str]) -> None:
        answer = client.get_object(Bucket=bucket, Key=key, **extra)
        upload = self._artifacts.new_upload()
        digest = hashlib.sha256()
        try:
            with open(upload, "wb") as out:
                for piece in answer["Body"].iter_chunks(1 << 20):
                    digest.update(piece)
                    out.write(piece)
            self._artifacts.put(bucket, key, upload, digest.hexdigest())
        finally:
            Path(upload).unlink(missing_ok=True)


def s3_client_factory(gateway: str, region: str) -> Callable[[], Any]:
    """A botocore S3 client for the gateway's artifact API, made on first use (credentials: the AWS chain)."""
    client: list[Any] = []

    def make() -> Any:
        if not client:
            import botocore.session
            from botocore.config import Config

            session = botocore.session.get_session()
            client.append(
                session.create_client(
                    "s3",
                    endpoint_url=gateway,
                    region_name=region,
                    config=Config(s3={"addressing_style": "path"}, retries={"max_attempts": 3}),
                )
            )
        return client[0]

    return make


def _no() -> None:
    return None
