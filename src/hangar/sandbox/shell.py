"""An interactive shell on a pty inside a sandbox, as the host sees it (``Sandbox.open_shell``).

The sandbox's supervisor owns the pty and the shell process; the host holds one connection per shell. Closing it
(or the sandbox stopping) kills the shell: a shell never outlives the sandbox it runs in.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Literal


@dataclass(frozen=True)
class ShellEvent:
    """Output of the pty (``output``), why no shell could start (``error``), or the shell's end (``exit``:
    ``exit_code`` is 128 + the signal when a signal killed it, ``signal`` then says which)."""

    kind: Literal["output", "error", "exit"]
    data: bytes = b""
    exit_code: int | None = None
    signal: int | None = None


class ShellProcess(ABC):
    @abstractmethod
    async def read(self) -> ShellEvent | None:
        """The next event; None when the sandbox went away without the shell's exit status (it is gone too)."""

    @abstractmethod
    async def write(self, data: bytes) -> None:
        """Bytes to the pty, as if typed (waits while the shell does not read its input)."""

    @abstractmethod
    async def resize(self, cols: int, rows: int) -> None: ...

    @abstractmethod
    async def signal(self, signum: int) -> None:
        """Signal the pty's foreground process group."""

    @abstractmethod
    async def hangup(self) -> None:
        """End the shell as a terminal hangup would (SIGHUP; SIGKILL if it lingers): its exit status follows."""

    @abstractmethod
    async def close(self) -> None:
        """Hang up: the shell and everything in its process group are killed. Idempotent."""
