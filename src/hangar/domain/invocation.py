"""What the data plane needs to know to run one version of a runtime: the seam between control and sessions.

``ControlPlane.resolve_target(runtime_ref, qualifier, account_id)`` returns an ``InvocationTarget``; the session
manager turns it into sandboxes and never reads the store itself.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

ServerProtocol = Literal["HTTP", "MCP", "A2A", "AGUI"]

# The port and path an agent serves, per protocol (AgentCore service contract).
PROTOCOL_DEFAULTS: dict[str, tuple[int, str]] = {
    "HTTP": (8080, "/invocations"),
    "AGUI": (8080, "/invocations"),
    "MCP": (8000, "/mcp"),
    "A2A": (9000, "/"),
}


@dataclass(frozen=True)
class ImageConfig:
    """A container image made runnable: its unpacked, read-only root filesystem and the parts of its OCI config a
    session honours. ``rootfs`` is content-addressed and shared by every version that resolves to the same image."""

    rootfs: Path
    manifest_digest: str  # sha256:... of the image manifest the version resolved to (immutable even if the tag moves)
    reference: str  # the containerUri as resolved (registry/repository@digest)
    architecture: str  # amd64, arm64, ...
    entrypoint: tuple[str, ...] = ()
    cmd: tuple[str, ...] = ()
    env: tuple[tuple[str, str], ...] = ()
    working_dir: str = "/"
    user: str = ""  # "uid[:gid]" or a name from the image's /etc/passwd; mapped onto the session's leased uid
    exposed_ports: tuple[str, ...] = ()
    layers: tuple[str, ...] = ()  # digests of the layer blobs, lowest first (what garbage collection keeps)

    def argv(self) -> tuple[str, ...]:
        """Entrypoint + Cmd as a container runtime would run them."""
        return self.entrypoint + self.cmd


@dataclass(frozen=True)
class PreparedVersion:
    """A version made runnable by ``hangar.artifacts``: both directories are immutable once READY.

    For a container image, ``image`` is set, ``code_dir`` and ``env_dir`` are both the image's rootfs and
    ``content_hash`` is the manifest digest."""

    code_dir: Path  # the unpacked artifact; the agent's working directory
    env_dir: Path  # the virtualenv built with uv (holds python, the requirements, and hangar.sdk)
    entry_point: tuple[str, ...]  # as declared, e.g. ("main.py",) or ("opentelemetry-instrument", "main.py")
    content_hash: str  # hash of code + requirements + runtime; equal hashes share one environment
    image: ImageConfig | None = None

    def command(self) -> tuple[str, ...]:
        """argv that starts the agent: ``main.py`` runs under the env's python, a console script from env/bin."""
        first, *rest = self.entry_point
        if first.endswith(".py"):
            return (str(self.env_dir / "bin" / "python"), first, *rest)
        return (str(self.env_dir / "bin" / first), *rest)


@dataclass(frozen=True)
class InvocationTarget:
    """One READY version of one runtime, reached through one endpoint."""

    account_id: str
    runtime_id: str
    runtime_arn: str
    runtime_name: str
    endpoint_name: str
    version: str
    protocol: ServerProtocol
    port: int
    path: str
    network_mode: Literal["PUBLIC", "VPC"]
    idle_timeout_s: int
    max_lifetime_s: int
    prepared: PreparedVersion
    environment: dict[str, str] = field(default_factory=dict)
    header_allowlist: tuple[str, ...] = ()
    # The runtime's ``customJWTAuthorizer`` exactly as stored (None: SigV4 only).
    jwt_authorizer: dict[str, Any] | None = None
    # ``resourceConfigurations[0].minimumMemoryInMiB`` of the version (None: the installation's memory limit).
    minimum_memory_mib: int | None = None
    # ``filesystemConfigurations`` of the version as stored (validated at create/update).
    filesystems: tuple[dict[str, Any], ...] = ()
