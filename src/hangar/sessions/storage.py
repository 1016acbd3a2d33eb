"""Persistent session storage (``filesystemConfigurations`` ``sessionStorage``) and a version's shared volumes.

Each (runtime id, session id) owns one sparse ext4 image of ``session_storage_mib`` under
``<data_dir>/session-storage/<runtime id>/<sha256 of the session id>/`` beside ``meta.json`` (session id, the
runtime version that last used it, last use, bytes used). An image gives the cap (ENOSPC inside, the host's disk
untouched beyond it), keeps modes, mtimes and symlinks exactly, and no hard link can reach a file outside it. On disk
its files belong to uid 0, "the session's user"; the sandbox backend attaches an ID-mapped view for the session's
leased uid (``sandbox/namespace/storage.py``).

While a session lives its image is loop-mounted (nosuid, nodev) at ``mnt`` in that directory, which is root-only;
one asyncio lock per key is held from ``acquire`` to ``release``, so a session id never has two users and
concurrent first calls never both create or mount its image. The storage is reset when the session comes back on
another runtime version, deleted after ``session_storage_expiry_s`` without use (a sweep at start and
periodically), and survives every end of the session and a Hangar restart: ``start`` unmounts what a killed process
left mounted and keeps the images.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import ctypes.util
import errno
import hashlib
import json
import logging
import os
import shutil
import subprocess
import time
from pathlib import Path
from typing import Any

from hangar.config import Settings
from hangar.domain.errors import InternalError, RuntimeClientError, ServiceUnavailableError, ValidationError
from hangar.domain.filesystems import normal_mount_path
from hangar.domain.invocation import InvocationTarget
from hangar.sandbox.base import Volume

log = logging.getLogger("hangar.sessions.storage")

IMAGE = "storage.ext4"
META = "meta.json"
MOUNT = "mnt"
SWEEP_INTERVAL_S = 3600.0
RELEASE_WAIT_S = 10.0
GVISOR_SWITCH = "HANGAR_SANDBOX_BACKEND"  # a runtime's environment asks for gVisor (sandbox/gvisor/routing.py)
Key = tuple[str, str]  # (runtime id, session id)


class SessionStorage:
    def __init__(
        self,
        settings: Settings,
        backend_name: str,
        artifacts_root: Path | None = None,
        state_root: Path | None = None,
    ) -> None:
        self.root = settings.data_dir / "session-storage"
        self.cap_bytes = settings.session_storage_mib << 20
        self.expiry_s = settings.session_storage_expiry_s
        self.backend_name = backend_name
        self.access_points = settings.filesystem_access_points
        self.artifacts_root = artifacts_root or settings.artifacts_dir or settings.data_dir / "artifacts"
        self._locks: dict[Key, asyncio.Lock] = {}
        self._waiting: dict[Key, int] = {}  # acquires waiting for a key's lock
        self._mounted: dict[Key, Path] = {}
        self._sweeper: asyncio.Task[None] | None = None
        self.state_root = state_root  # the namespace backend's: its fork slots are unmounted at stop

    # -- what a version asks for -------------------------------------------------------------------------------

    @staticmethod
    def storage_path(target: InvocationTarget) -> str | None:
        for item in target.filesystems:
            config = item.get("sessionStorage")
            if config is not None:
                return normal_mount_path(str(config["mountPath"]))
        return None

    def volumes(self, target: InvocationTarget) -> tuple[Volume, ...]:
        """The version's shared mounts as host directories. What cannot be honoured is a ValidationException when the
        session starts: the operator's mapping is checked here, where it is current (it may change after create)."""
        found: list[Volume] = []
        for item in target.filesystems:
            for kind, config in item.items():
                if kind == "sessionStorage":
                    continue
                path = normal_mount_path(str(config["mountPath"]))
                if kind == "s3BucketMount":
                    found.append(self._bucket_volume(path, config))
                elif kind in ("efsAccessPoint", "s3FilesAccessPoint"):
                    found.append(self._access_point_volume(path, kind, str(config["accessPointArn"])))
                else:
                    raise ValidationError(f"filesystemConfigurations: {kind} cannot be mounted by Hangar")
        return tuple(found)

    def _bucket_volume(self, path: str, config: dict[str, Any]) -> Volume:
        """A bucket of Hangar's own artifact store (an object's key is its path there), read-only: objects are
        written through the S3 API only."""
        bucket = self.artifacts_root / str(config["bucket"])
        source = bucket / str(config.get("prefix", "")).strip("/") if config.get("prefix") else bucket
        if not source.resolve().is_relative_to(bucket.resolve()) or not source.is_dir():
            raise ValidationError(
                f"filesystemConfigurations: s3BucketMount {config['bucket']}/{config.get('prefix', '')} is not a "
                "bucket (or prefix) of Hangar's S3 store"
            )
        return Volume(path, source, read_only=True)

    def _access_point_volume(self, path: str, kind: str, arn: str) -> Volume:
        mapped = self.access_points.get(arn)
        if mapped is None:
            raise ValidationError(f"filesystemConfigurations: {kind} {arn} is not mapped by the operator")
        host, _, mode = mapped.rpartition(":") if mapped.endswith((":ro", ":rw")) else (mapped, "", "ro")
        if not Path(host).is_dir():
            raise ValidationError(f"filesystemConfigurations: {kind} {arn} maps to {host}, which is not a directory")
        return Volume(path, Path(host), read_only=mode != "rw")

    # -- lifecycle ---------------------------------------------------------------------------------------------

    async def start(self) -> None:
        """Unmount what a killed process left mounted (images kept), sweep expired storage, then sweep periodically."""
        await asyncio.to_thread(self._unmount_stale)
        await asyncio.to_thread(self.sweep, time.time())
        self._sweeper = asyncio.create_task(self._sweep_forever(), name="session-storage-sweep")

    async def stop(self) -> None:
        """After every session ended (Hangar's shutdown)."""
        if self._sweeper is not None:
            self._sweeper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._sweeper
        if self.state_root is not None:
            from hangar.sandbox.namespace.storage import unmount_slots  # namespace backends only (Linux)

            await asyncio.to_thread(unmount_slots, self.state_root)

    async def _sweep_forever(self) -> None:
        interval = min(SWEEP_INTERVAL_S, max(self.expiry_s / 4, 1.0))
        while True:
            await asyncio.sleep(interval)
            try:
                await asyncio.to_thread(self.sweep, time.time())
            except Exception:
                log.exception("sweeping session storage failed")

    # -- one session -------------------------------------------------------------------------------------------

    async def acquire(self, target: InvocationTarget, session_id: str) -> Path | None:
        """Mount the session's storage (created empty, or reset if its version changed) and return the host mount;
        None when the version has no sessionStorage. Waits while a previous session of the same id releases it."""
        backend = "gvisor" if target.environment.get(GVISOR_SWITCH) == "gvisor" else self.backend_name
        if target.filesystems and backend != "namespace":
            raise RuntimeClientError(
                f"filesystemConfigurations need the namespace sandbox backend; this session would run on {backend}"
            )
        if self.storage_path(target) is None:
            return None
        key = (target.runtime_id, session_id)
        lock = self._locks.setdefault(key, asyncio.Lock())
        self._waiting[key] = self._waiting.get(key, 0) + 1
        try:  # held by the previous session of this id until its sandbox stopped and its storage is unmounted
            await lock.acquire()
        finally:
            self._waiting[key] -= 1
            if not self._waiting[key]:
                del self._waiting[key]
        try:
            mount = await asyncio.to_thread(self._mount, key, target.version)
        except BaseException:
            lock.release()
            raise
        self._mounted[key] = mount
        return mount

    async def release(self, runtime_id: str, session_id: str) -> None:
        """Unmount after the session's sandbox is gone (its views detached). Idempotent."""
        key = (runtime_id, session_id)
        mount = self._mounted.pop(key, None)
        if mount is None:
            return
        try:
            await asyncio.to_thread(self._unmount, key)
        except Exception:
            log.exception("unmounting the storage of session %s of %s failed", session_id, runtime_id)
        finally:
            # the lock is forgotten only when nobody waits for it (a waiter must get this very lock)
            lock = self._locks.get(key) if key in self._waiting else self._locks.pop(key, None)
            if lock is not None and lock.locked():
                lock.release()

    def describe(self, runtime_id: str, session_id: str) -> dict[str, object]:
        """Storage use of one session, for the operator API (empty when it has none)."""
        key = (runtime_id, session_id)
        mount = self._mounted.get(key)
        if mount is None:
            meta = _read_meta(self.key_dir(key))
            return {"storageBytes": meta["usedBytes"]} if isinstance(meta.get("usedBytes"), int) else {}
        return {"storageBytes": _used_bytes(mount), "storageCapBytes": self.cap_bytes}

    def key_dir(self, key: Key) -> Path:
        runtime_id, session_id = key
        return self.root / runtime_id / hashlib.sha256(session_id.encode()).hexdigest()[:40]

    # -- blocking steps (worker threads) -----------------------------------------------------------------------

    def _mount(self, key: Key, version: str) -> Path:
        directory = self.key_dir(key)
        directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        self.root.chmod(0o700)
        image, mount = directory / IMAGE, directory / MOUNT
        meta = _read_meta(directory)
        if image.exists() and meta.get("version") != version:
            log.info("session %s of %s moved to version %s: its storage is reset", key[1], key[0], version)
            _wait_detached(image)
            image.unlink()
        created = not image.exists()
        if created:
            _make_image(image, self.cap_bytes)
        _wait_detached(image)
        mount.mkdir(mode=0o700, exist_ok=True)
        _run(["mount", "-t", "ext4", "-o", "loop,nosuid,nodev,noatime", str(image), str(mount)])
        if created:
            with contextlib.suppress(FileNotFoundError):
                (mount / "lost+found").rmdir()
            mount.chmod(0o700)
        _write_meta(
            directory,
            {
                **meta,
                "runtimeId": key[0],
                "sessionId": key[1],
                "version": version,
                "lastUsedAt": time.time(),
                "createdAt": time.time() if created else meta.get("createdAt", time.time()),
            },
        )
        return mount

    def _unmount(self, key: Key) -> None:
        directory = self.key_dir(key)
        mount = directory / MOUNT
        used = _used_bytes(mount) if os.path.ismount(mount) else None
        _umount(mount)
        meta = _read_meta(directory)
        meta["lastUsedAt"] = time.time()
        if used is not None:
            meta["usedBytes"] = used
        _write_meta(directory, meta)

    def _unmount_stale(self) -> None:
        if not self.root.is_dir():
            return
        for directory in self.root.glob("*/*"):
            mount = directory / MOUNT
            if os.path.ismount(mount):
                log.warning("unmounting session storage %s left mounted by a previous Hangar process", directory)
                _umount(mount)
                meta = _read_meta(directory)
                meta["lastUsedAt"] = time.time()
                _write_meta(directory, meta)

    def sweep(self, now: float) -> int:
        """Delete every storage unused for ``expiry_s`` (never one in use); returns how many."""
        if not self.root.is_dir():
            return 0
        # a key being acquired holds its lock before its directory has a meta.json: never swept from under it
        in_use = {self.key_dir(key) for key, lock in list(self._locks.items()) if lock.locked()}
        in_use |= {self.key_dir(key) for key in list(self._mounted)}
        removed = 0
        for directory in self.root.glob("*/*"):
            if directory in in_use or os.path.ismount(directory / MOUNT):
                continue
            last = _read_meta(directory).get("lastUsedAt")
            if not isinstance(last, (int, float)):
                with contextlib.suppress(OSError):
                    last = directory.stat().st_mtime  # made, but never used to the end (a crash in between)
            if isinstance(last, (int, float)) and now - last < self.expiry_s:
                continue
            log.info("session storage %s expired (unused since %s)", directory, last)
            shutil.rmtree(directory, ignore_errors=True)
            removed += 1
        return removed


def _read_meta(directory: Path) -> dict[str, Any]:
    try:
        meta = json.loads((directory / META).read_text())
    except (OSError, ValueError):
        return {}
    return meta if isinstance(meta, dict) else {}


def _write_meta(directory: Path, meta: dict[str, Any]) -> None:
    tmp = directory / f"{META}.tmp"
    tmp.write_text(json.dumps(meta))
    tmp.replace(directory / META)


def _used_bytes(mount: Path) -> int:
    info = os.statvfs(mount)
    return (info.f_blocks - info.f_bfree) * info.f_frsize


def _make_image(image: Path, size: int) -> None:
    """A sparse file of ``size`` bytes formatted ext4 (no reserved blocks; the root directory owned by uid 0)."""
    tmp = image.with_suffix(".new")
    with open(tmp, "wb") as file:
        file.truncate(size)
    _run(["mkfs.ext4", "-q", "-F", "-m", "0", "-E", "root_owner=0:0", str(tmp)])
    tmp.replace(image)


def _wait_detached(image: Path) -> None:
    """A loop device still holding the image (a lazily detached mount not yet gone) must not be doubled."""
    deadline = time.monotonic() + RELEASE_WAIT_S
    while _loop_devices(image):
        if time.monotonic() > deadline:
            raise ServiceUnavailableError("The session's storage is still in use by its previous sandbox; retry")
        time.sleep(0.05)


def _loop_devices(image: Path) -> list[str]:
    result = subprocess.run(
        ["losetup", "-j", str(image)], capture_output=True, text=True, check=False, env={"PATH": "/usr/sbin:/sbin"}
    )
    return [line.split(":", 1)[0] for line in result.stdout.splitlines() if line.strip()]


def _umount(mount: Path) -> None:
    libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
    libc.umount2.argtypes = [ctypes.c_char_p, ctypes.c_int]
    # SAFETY: unmounts the session storage's own root-only mount point (lazily only when it is busy).
    if libc.umount2(str(mount).encode(), 0) != 0:
        err = ctypes.get_errno()
        if err == errno.EINVAL:
            return  # not mounted
        if err != errno.EBUSY or libc.umount2(str(mount).encode(), 2) != 0:
            raise OSError(err, f"umount {mount}: {os.strerror(err)}")


def _run(argv: list[str]) -> None:
    env = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin"}
    # SAFETY: fixed util-linux/e2fsprogs commands on paths Hangar made in its own data dir.
    result = subprocess.run(argv, capture_output=True, text=True, check=False, env=env)
    if result.returncode != 0:
        raise InternalError(f"{argv[0]} failed: {result.stderr.strip()[:500]}")
