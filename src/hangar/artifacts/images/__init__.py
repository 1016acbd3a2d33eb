"""Hangar as its own container registry: a content-addressed blob store, OCI manifests, safe layer unpacking into
read-only rootfs trees, and pulls from other registries (see docs/images.md)."""
