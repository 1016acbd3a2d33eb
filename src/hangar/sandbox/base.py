"""The one interface every isolation backend implements (``namespace``, ``process``, later ``gvisor``).

A sandbox runs one agent process tree. The gateway never speaks TCP to it: ``Sandbox.socket_path`` is a Unix
socket on the host which reaches the agent's port inside the sandbox (the agent still listens on
0.0.0.0:8080/8000/9000 in its own network namespace, as the AgentCore contract says).
"""

from __future__ import annotations

import asyncio
from abc import ABC, abstractmethod
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from hangar.sandbox.shell import ShellProcess


@dataclass(frozen=True)
class Limits:
    memory_bytes: int
    cpus: float
    pids: int
    disk_bytes: int  # writable home + /tmp


@dataclass(frozen=True)
class Outbound:
    """Host services the sandbox reaches through its own supervisor, never over the network: each ``(port, name)``
    makes the supervisor accept on ``127.0.0.1:port`` inside and splice every connection to the Unix socket
    ``name`` in ``socket_dir`` (a root-owned host directory the sandbox sees read-only at ``OUTBOUND_DIR``; it also
    holds ``ca-bundle.pem``, the system CAs plus Hangar's CA). ``hosts`` are resolved to 127.0.0.1 inside."""

    socket_dir: Path
    ports: tuple[tuple[int, str], ...]
    hosts: tuple[str, ...] = ()
    # The container credentials port: a warm template answers it itself while it imports the agent, with
    # credentials that are already expired, so that every fork refreshes its own through its own supervisor.
    template_credentials_port: int | None = None


OUTBOUND_DIR = "/run/hangar"  # where a sandbox sees ``Outbound.socket_dir``
CA_BUNDLE_PATH = f"{OUTBOUND_DIR}/ca-bundle.pem"


@dataclass(frozen=True)
class SandboxSpec:
    sandbox_id: str  # unique on this host, [a-z0-9-]{1,64}; names the cgroup, the state dir and the uid lease
    code_dir: Path  # mounted read-only; the agent's working directory
    env_dir: Path  # the version's virtualenv, mounted read-only at the same path
    command: tuple[str, ...]  # argv of the agent (absolute interpreter path first)
    agent_port: int  # where the agent listens inside the sandbox (8080, 8000, 9000)
    limits: Limits
    environment: Mapping[str, str] = field(default_factory=dict)
    network: Literal["public", "none"] = "public"
    outbound: Outbound | None = None
    # A container image's unpacked, read-only root filesystem: the sandbox sees it as ``/`` through a per-session
    # writable overlay (size-capped by ``limits.disk_bytes``, discarded at stop); ``command`` is the image's argv,
    # ``user`` its ``User`` ("uid[:gid]" or a name in the image's /etc/passwd) and ``workdir`` its ``WorkingDir``.
    # None: a code sandbox (host /usr, ``env_dir`` and ``code_dir``).
    rootfs: Path | None = None
    user: str = ""
    workdir: str = "/"
    # filesystemConfigurations: host directories shared by all sessions of the version (bound at their paths), the
    # path of the version's sessionStorage, and (per session, never in a template's spec) the host mount of the
    # session's own store, attached ID-mapped to the sandbox's uid at ``storage_path`` (``namespace/storage.py``).
    volumes: tuple[Volume, ...] = ()
    storage_path: str | None = None
    storage: Path | None = None


@dataclass(frozen=True)
class Volume:
    """A host directory bound at ``path`` (``/mnt/<name>``) inside every sandbox of a version."""

    path: str
    source: Path
    read_only: bool = True


@dataclass(frozen=True)
class ExecEvent:
    """One piece of a command's output, or its end (``kind == "exit"``: ``exit_code``/``timed_out`` set)."""

    kind: Literal["stdout", "stderr", "exit"]
    data: bytes = b""
    exit_code: int | None = None
    timed_out: bool = False


@dataclass(frozen=True)
class SandboxStats:
    memory_bytes: int  # current usage of the whole tree (cgroup, or summed RSS where there is none)
    pids: int
    cpu_seconds: float


class Sandbox(ABC):
    id: str
    socket_path: Path
    log_path: Path  # the supervisor's and agent's stdout and stderr; deleted with the sandbox on stop

    @abstractmethod
    def alive(self) -> bool:
        """True while the agent process tree runs."""

    def exit_pid(self) -> int | None:
        """The host pid whose exit ends the sandbox (the lifecycle loop watches it through a pidfd rather than ask
        ``alive()`` on every pass); None: ask ``alive()``."""
        return None

    @abstractmethod
    def exec(self, command: str, timeout: float) -> AsyncIterator[ExecEvent]:
        """Run ``/bin/sh -c command`` inside the sandbox (same isolation), streaming its output."""

    async def open_shell(self, cols: int, rows: int) -> ShellProcess:
        """An interactive shell on a pty inside the sandbox (same isolation as ``exec``); see sandbox/shell.py."""
        raise NotImplementedError(f"{type(self).__name__} has no interactive shells")

    @abstractmethod
    async def stats(self) -> SandboxStats: ...

    @abstractmethod
    async def stop(self) -> None:
        """Kill the whole process tree and delete the sandbox's writable files. Idempotent."""

    async def until_listening(self, timeout: float) -> None:
        """Between start-up ``/ping`` attempts: return once the agent may have begun to listen, at the latest after
        ``timeout``. A backend told when the agent listens (a cold start's supervisor) returns early."""
        await asyncio.sleep(timeout)


class TemplateUnsafe(Exception):
    """The agent cannot be forked from a template (threads at import, not a script, ...): its sessions start cold."""


class Template(ABC):
    """A warm template of one version: the agent imported and its app built, forked into new sessions.

    ``unsafe_reason`` says why it cannot be forked (threads at import, an entry point that is not a script, ...):
    sessions of its version then start cold, and a new template would not do better until the version changes."""

    id: str
    unsafe_reason: str | None
    forks: int  # sessions forked from it so far

    @abstractmethod
    def alive(self) -> bool:
        """True while the template can take fork requests."""

    @abstractmethod
    def describe(self) -> dict[str, object]: ...

    @abstractmethod
    async def stop(self) -> None:
        """Retire the template: it takes no more forks at once; sessions forked from it are not affected, and its
        remains are removed after the last of them ended (so this may wait that long). Idempotent."""


class SandboxBackend(ABC):
    name: str
    isolates: bool  # False for ``process``: it must say so loudly
    supports_templates: bool = False

    async def start_template(self, spec: SandboxSpec) -> Template:
        """Start a warm template of ``spec``'s version; returns once it is ready (or raises with the reason)."""
        raise NotImplementedError(f"the {self.name} backend has no warm templates")

    async def fork(self, template: Template, spec: SandboxSpec) -> Sandbox:
        """A new sandbox for ``spec`` forked from ``template``, isolated exactly as ``start`` isolates one."""
        raise NotImplementedError(f"the {self.name} backend has no warm templates")

    def outbound_dir(self) -> Path | None:
        """A root-owned directory for the host sockets of ``Outbound`` that every sandbox uid can reach (None: this
        backend cannot give its sandboxes a private view of host names and sockets, so they get none)."""
        return None

    def sandbox_of_peer(self, pid: int, uid: int) -> str | None:
        """Which live sandbox a process connected to an outbound socket belongs to (from SO_PEERCRED), if any."""
        return None

    @abstractmethod
    async def start(self, spec: SandboxSpec) -> Sandbox:
        """Start the agent; returns once the process runs (readiness is the session manager's /ping poll)."""

    @abstractmethod
    async def cleanup_orphans(self) -> int:
        """Remove process trees, cgroups and files left by a previous Hangar process; returns how many."""

    async def settle(self) -> None:
        """Wait for what stopped sandboxes left to finish in the background (Hangar's shutdown); none by default."""
        return None
