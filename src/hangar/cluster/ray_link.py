"""The one place Hangar joins a Ray cluster, and the cluster's shared secret.

Ray is imported lazily (the ``cluster`` extra is optional). ``RAY_AUTH_MODE`` is always set explicitly before
``ray.init``: left unset, a cluster started in token mode silently refuses drivers that guessed otherwise
(spec/probes.md Part 2 section 1), so Hangar defaults it to ``token``.
"""

from __future__ import annotations

import logging
import os
import secrets
import threading
from typing import Any

NAMESPACE = "hangar"
KEY_NAME = b"hangar/cluster-key"
KEY_BYTES = 32

_lock = threading.Lock()


class ClusterUnavailableError(RuntimeError):
    """Ray is not installed, or the cluster cannot be reached."""


def ray_module() -> Any:
    """``import ray``, or a clear error naming the extra to install. Ray reads its auth mode when imported, so the
    explicit defaults are set first."""
    os.environ.setdefault("RAY_AUTH_MODE", "token")
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    try:
        import ray
    except ImportError:
        raise ClusterUnavailableError(
            "Ray is not installed: pip install 'hangar[cluster]' (ray>=2.60,<3) to run Hangar on several nodes"
        ) from None
    return ray


def connect(address: str | None = None) -> None:
    """Join the cluster at ``address`` (default: ``RAY_ADDRESS``) as a driver in namespace "hangar". Idempotent."""
    ray = ray_module()
    with _lock:
        if ray.is_initialized():
            return
        address = address or os.environ.get("RAY_ADDRESS")
        if not address:
            raise ClusterUnavailableError("no Ray cluster named: set RAY_ADDRESS (host:port of the head's GCS)")
        try:
            ray.init(
                address=address,
                namespace=NAMESPACE,
                logging_level=logging.WARNING,
                log_to_driver=False,
                configure_logging=True,
            )
        except (ConnectionError, RuntimeError, ValueError) as exc:
            raise ClusterUnavailableError(f"cannot join the Ray cluster at {address}: {exc}") from exc


def cluster_key() -> bytes:
    """The 32-byte secret that signs gateway → node requests, created once by whoever asks first.

    Kept in Ray's internal KV: put-if-absent, then read back, so two first askers agree on one key."""
    from ray.experimental import internal_kv

    internal_kv._internal_kv_put(KEY_NAME, secrets.token_bytes(KEY_BYTES), overwrite=False, namespace=NAMESPACE)
    key = internal_kv._internal_kv_get(KEY_NAME, namespace=NAMESPACE)
    if not isinstance(key, bytes) or len(key) != KEY_BYTES:
        raise ClusterUnavailableError("the cluster key in Ray's KV is missing or malformed")
    return key


def disconnect() -> None:
    ray = ray_module()
    if ray.is_initialized():
        ray.shutdown()
