"""``filesystemConfigurations``: AgentCore's rules (botocore's model) plus what Hangar can honour, checked at
Create/UpdateAgentRuntime so that nothing is silently dropped at session start.

Hangar honours ``sessionStorage`` (one per runtime: a private, size-capped store per session id), ``s3BucketMount``
(a bucket of Hangar's own artifact store) and ``efsAccessPoint`` / ``s3FilesAccessPoint`` (host directories the
operator maps by ARN). ``capacityProviderVolume`` has no meaning without capacity providers and is refused.
"""

from __future__ import annotations

from collections.abc import Collection
from typing import Any

from hangar.domain.validation import Checker

MOUNT_PATH = r"/mnt/[a-zA-Z0-9._-]+/?"
KINDS = ("sessionStorage", "s3FilesAccessPoint", "efsAccessPoint", "capacityProviderVolume", "s3BucketMount")
S3FILES_ARN = r"arn:aws[-a-z]*:s3files:[0-9a-z-:]+:file-system/fs-[0-9a-f]{17,40}/access-point/fsap-[0-9a-f]{17,40}"
EFS_ARN = r"arn:aws[-a-z]*:elasticfilesystem:[0-9a-z-:]+:access-point/fsap-[0-9a-f]{8,40}"
ACCESS_POINT_ARN = {"s3FilesAccessPoint": (S3FILES_ARN, 256), "efsAccessPoint": (EFS_ARN, 128)}
S3_PREFIX = r"[a-zA-Z0-9{][a-zA-Z0-9!_.*'()/{}-]*"
BUCKET = r"[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]"


def normal_mount_path(path: str) -> str:
    """``/mnt/name/`` and ``/mnt/name`` are the same mount point."""
    return path.rstrip("/")


def check_filesystems(
    check: Checker, value: Any, access_points: Collection[str] | None = None
) -> list[dict[str, Any]] | None:
    """The list as sent when every member is valid and can be honoured; None (with problems recorded) otherwise.
    ``access_points``: the ARNs the operator mapped (None: not known here, checked where settings are)."""
    items = check.array(value, "filesystemConfigurations", max_len=5)
    if items is None:
        return None
    seen: set[str] = set()
    sessions = 0
    ok = True
    for index, item in enumerate(items):
        path = f"filesystemConfigurations.{index + 1}.member"
        member = check.struct(item, path)
        kind = check.union(member, path, KINDS) if member is not None else None
        config = check.struct(member[kind], f"{path}.{kind}") if member is not None and kind is not None else None
        if kind is None or config is None or member is None:
            ok = False
            continue
        where = f"{path}.{kind}"
        mount = check.string(
            check.required(config, "mountPath", f"{where}.mountPath"),
            f"{where}.mountPath",
            min_len=6,
            max_len=200,
            pattern=MOUNT_PATH,
        )
        ok = ok and mount is not None and _check_kind(check, kind, config, where, access_points)
        if mount is None:
            continue
        normal = normal_mount_path(mount)
        if normal in seen:
            check.fail(f"{where}.mountPath", "Mount paths must be unique", mount)
            ok = False
        seen.add(normal)
        sessions += kind == "sessionStorage"
        if kind == "sessionStorage" and sessions > 1:
            check.fail(where, "Hangar gives a session one sessionStorage; declare at most one", quote=False)
            ok = False
    return items if ok else None


def _check_kind(
    check: Checker, kind: str, config: dict[str, Any], where: str, access_points: Collection[str] | None
) -> bool:
    if kind == "sessionStorage":
        return True
    if kind == "capacityProviderVolume":
        check.fail(where, "Hangar has no capacity providers: capacityProviderVolume cannot be mounted", quote=False)
        return False
    if kind == "s3BucketMount":
        bucket = check.string(
            check.required(config, "bucket", f"{where}.bucket"), f"{where}.bucket", min_len=3, max_len=63
        )
        if bucket is not None and check.string(bucket, f"{where}.bucket", pattern=BUCKET) is None:
            return False
        prefix = config.get("prefix")
        if prefix is not None:
            if check.string(prefix, f"{where}.prefix", min_len=1, max_len=1024, pattern=S3_PREFIX) is None:
                return False
            if ".." in prefix.split("/"):
                check.fail(f"{where}.prefix", "Member must not contain a '..' segment", prefix)
                return False
        for name, pattern in (("s3BucketOwner", r"[0-9]{12}"), ("s3BucketRegion", r"([a-z]+-){2,3}\d+")):
            given = config.get(name)
            if given is not None and check.string(given, f"{where}.{name}", max_len=32, pattern=pattern) is None:
                return False
        return bucket is not None
    pattern, max_len = ACCESS_POINT_ARN[kind]
    arn = check.string(
        check.required(config, "accessPointArn", f"{where}.accessPointArn"),
        f"{where}.accessPointArn",
        max_len=max_len,
        pattern=pattern,
    )
    if arn is None:
        return False
    if access_points is not None and arn not in access_points:
        check.fail(
            f"{where}.accessPointArn",
            "Hangar mounts only the access points its operator maps to host directories "
            "(setting filesystem_access_points)",
            arn,
        )
        return False
    return True
