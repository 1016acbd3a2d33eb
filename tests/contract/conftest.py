"""The contract suite's fixtures live beside the attacker suite's, in tests/sandbox/fixtures.py."""

from tests.sandbox.fixtures import agent_files, anyio_backend

__all__ = ["agent_files", "anyio_backend"]
