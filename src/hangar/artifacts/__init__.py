"""Artifacts → runnable versions: unpack, check, build an immutable environment with uv (cached by hash)."""
