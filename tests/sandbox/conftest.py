"""Sandbox-level tests share the contract suite's fixtures (tests/sandbox/fixtures.py)."""

from tests.sandbox.fixtures import agent_files, anyio_backend

__all__ = ["agent_files", "anyio_backend"]
