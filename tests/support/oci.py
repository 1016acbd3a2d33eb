"""Build OCI images by hand (layers with tarfile, configs, manifests, OCI layouts) and push them to a Hangar
registry over its ``/v2`` API with httpx; hostile images need bytes no image builder would produce."""

from __future__ import annotations

import base64
import gzip
import hashlib
import io
import json
import tarfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
OCI_LAYER_GZIP = "application/vnd.oci.image.layer.v1.tar+gzip"
OCI_LAYER_ZSTD = "application/vnd.oci.image.layer.v1.tar+zstd"


def digest_of(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


@dataclass
class Entry:
    """One tar member: kind is file, dir, symlink, hardlink, chr, blk or fifo."""

    name: str
    kind: str = "file"
    data: bytes = b""
    mode: int = 0o644
    target: str = ""

    def info(self) -> tarfile.TarInfo:
        info = tarfile.TarInfo(self.name)
        info.mode = self.mode
        info.mtime = 1_700_000_000
        info.uid = info.gid = 0
        types = {
            "file": tarfile.REGTYPE,
            "dir": tarfile.DIRTYPE,
            "symlink": tarfile.SYMTYPE,
            "hardlink": tarfile.LNKTYPE,
            "chr": tarfile.CHRTYPE,
            "blk": tarfile.BLKTYPE,
            "fifo": tarfile.FIFOTYPE,
        }
        info.type = types[self.kind]
        if self.kind == "file":
            info.size = len(self.data)
        if self.kind in ("symlink", "hardlink"):
            info.linkname = self.target
        if self.kind in ("chr", "blk"):
            info.devmajor, info.devminor = 1, 3
        return info


def tar_bytes(entries: list[Entry]) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.PAX_FORMAT) as archive:
        for entry in entries:
            info = entry.info()
            archive.addfile(info, io.BytesIO(entry.data) if entry.kind == "file" else None)
    return buffer.getvalue()


def layer(entries: list[Entry], compression: str = "gzip") -> tuple[bytes, bytes]:
    """(blob, uncompressed tar) of a layer."""
    raw = tar_bytes(entries)
    if compression == "gzip":
        return gzip.compress(raw, mtime=0), raw
    if compression == "zstd":
        import zstandard

        return zstandard.ZstdCompressor().compress(raw), raw
    return raw, raw


def config_bytes(diff_ids: list[str], architecture: str = "amd64", entrypoint: list[str] | None = None) -> bytes:
    document = {
        "architecture": architecture,
        "os": "linux",
        "config": {"Entrypoint": entrypoint or ["/bin/agent"], "Env": ["PATH=/bin"], "WorkingDir": "/"},
        "rootfs": {"type": "layers", "diff_ids": diff_ids},
    }
    return json.dumps(document).encode()


@dataclass
class Image:
    """An image's blobs and manifest, ready to push or to write as an OCI layout."""

    layers: list[tuple[bytes, str]] = field(default_factory=list)  # (blob, media type)
    config: bytes = b"{}"
    manifest: bytes = b"{}"

    @property
    def digest(self) -> str:
        return digest_of(self.manifest)

    def blobs(self) -> list[bytes]:
        return [self.config] + [blob for blob, _ in self.layers]


def image(
    layer_entries: list[list[Entry]],
    architecture: str = "amd64",
    compression: str = "gzip",
    declared_sizes: list[int] | None = None,
) -> Image:
    built = [layer(entries, compression) for entries in layer_entries]
    config = config_bytes([digest_of(raw) for _, raw in built], architecture)
    media = OCI_LAYER_ZSTD if compression == "zstd" else OCI_LAYER_GZIP
    descriptors = [
        {
            "mediaType": media,
            "digest": digest_of(blob),
            "size": (declared_sizes or [])[i] if declared_sizes else len(blob),
        }
        for i, (blob, _) in enumerate(built)
    ]
    manifest = {
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": {"mediaType": OCI_CONFIG, "digest": digest_of(config), "size": len(config)},
        "layers": descriptors,
    }
    return Image([(blob, media) for blob, _ in built], config, json.dumps(manifest).encode())


def write_layout(path: Path, img: Image, tag: str) -> Path:
    """An OCI image layout directory (what ``skopeo copy oci:<path>:<tag>`` reads)."""
    blobs = path / "blobs" / "sha256"
    blobs.mkdir(parents=True, exist_ok=True)
    for blob in [*img.blobs(), img.manifest]:
        (blobs / digest_of(blob).split(":")[1]).write_bytes(blob)
    (path / "oci-layout").write_text(json.dumps({"imageLayoutVersion": "1.0.0"}))
    index = {
        "schemaVersion": 2,
        "manifests": [
            {
                "mediaType": OCI_MANIFEST,
                "digest": img.digest,
                "size": len(img.manifest),
                "annotations": {"org.opencontainers.image.ref.name": tag},
            }
        ],
    }
    (path / "index.json").write_text(json.dumps(index))
    return path


class RegistryClient:
    """Speaks /v2 to a Hangar registry with the password GetAuthorizationToken gives (user AWS)."""

    def __init__(self, base_url: str, password: str) -> None:
        self.http = httpx.Client(base_url=base_url, auth=("AWS", password), timeout=60)

    def close(self) -> None:
        self.http.close()

    def push_blob(self, repository: str, data: bytes, digest: str | None = None) -> httpx.Response:
        return self.http.post(
            f"/v2/{repository}/blobs/uploads/", params={"digest": digest or digest_of(data)}, content=data
        )

    def push_manifest(
        self, repository: str, reference: str, body: bytes, media_type: str = OCI_MANIFEST
    ) -> httpx.Response:
        return self.http.put(
            f"/v2/{repository}/manifests/{reference}", content=body, headers={"Content-Type": media_type}
        )

    def push(self, repository: str, img: Image, tag: str) -> str:
        for blob in img.blobs():
            answer = self.push_blob(repository, blob)
            assert answer.status_code == 201, answer.text
        answer = self.push_manifest(repository, tag, img.manifest)
        assert answer.status_code == 201, answer.text
        return answer.headers["Docker-Content-Digest"]


def ecr_password(ecr_client: Any) -> str:
    token = ecr_client.get_authorization_token()["authorizationData"][0]["authorizationToken"]
    user, _, password = base64.b64decode(token).decode().partition(":")
    assert user == "AWS"
    return password
