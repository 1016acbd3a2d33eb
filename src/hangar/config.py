"""All settings of one Hangar installation, in one place.

Every field reads the environment variable ``HANGAR_<FIELD>`` (upper case); the CLI overrides a few of them
with flags. ``docs/configuration.md`` lists every field, and a test keeps the two in step.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

DEFAULT_PORT = 8780
DEFAULT_ACCOUNT_ID = "123456789012"


class Settings(BaseSettings):
    """Settings of one installation (one process serving control plane, data plane and console)."""

    model_config = SettingsConfigDict(env_prefix="HANGAR_", extra="ignore")

    host: str = Field("127.0.0.1", description="Address the server binds to.")
    port: int = Field(DEFAULT_PORT, description="TCP port of the server (control plane, data plane, console).")
    data_dir: Path = Field(
        Path(".hangar"),
        description="Directory holding the database, artifacts, environments and credentials.",
    )
    region: str = Field("us-west-2", description="AWS region this installation answers as; used in ARNs and SigV4.")
    account_id: str = Field(DEFAULT_ACCOUNT_ID, description="12-digit account id used in ARNs.")
    database_url: str | None = Field(
        None,
        description="SQLAlchemy URL of the store. Unset: SQLite (WAL) at <data_dir>/hangar.db. "
        "PostgreSQL: postgresql+psycopg://user:pass@host:port/db (needs the [postgres] extra).",
    )
    artifacts_dir: Path | None = Field(
        None, description="Root of the local artifact store (S3-style buckets). Unset: <data_dir>/artifacts."
    )
    sandbox_backend: Literal["auto", "namespace", "gvisor", "process"] = Field(
        "auto",
        description="Isolation backend for sessions. auto and namespace: isolate every session, or refuse to start "
        "(naming what the host lacks), and run the runtimes whose environment sets HANGAR_SANDBOX_BACKEND=gvisor "
        "in gVisor; gvisor: every session in gVisor (runsc); process: NO isolation, only when asked for explicitly.",
    )
    gvisor_runsc: str = Field("runsc", description="The runsc binary (name on PATH or path) of gVisor sessions.")
    gvisor_platform: Literal["ptrace", "kvm"] = Field(
        "ptrace", description="gVisor's platform: ptrace works everywhere; kvm is faster where /dev/kvm works."
    )
    egress: Literal["allow", "deny"] = Field(
        "allow", description="Outbound network for sandboxes of PUBLIC runtimes; deny cuts all egress."
    )
    cgroup_favor_dynmods: bool = Field(
        True,
        description="At start, set favordynmods on the host's cgroup2 mount (its other flags kept): a cold start's "
        "cgroup join then skips an RCU grace period (~10 ms). Host-wide; false leaves the mount as it is.",
    )
    max_sessions: int = Field(1000, description="Global cap on live sessions (sandboxes).")
    max_sessions_per_runtime: int = Field(500, description="Cap on live sessions of one runtime.")
    session_memory_mib: int = Field(2048, description="Memory limit of one sandbox, MiB.")
    session_cpus: float = Field(1.0, description="CPU limit of one sandbox, in cores.")
    session_pids: int = Field(256, description="Process/thread limit of one sandbox.")
    session_tmp_mib: int = Field(512, description="Size limit of a sandbox's writable home and /tmp, MiB.")
    session_start_timeout_s: float = Field(
        60.0, description="A sandbox whose agent does not answer /ping by then is ended."
    )
    session_time_scale: float = Field(
        1.0,
        gt=0,
        description="Multiplies every runtime's idle timeout and max lifetime (tests shrink lifecycles with it; "
        "keep 1 in production).",
    )
    session_storage_mib: int = Field(
        1024,
        ge=16,
        description="Size cap of one session's persistent storage (filesystemConfigurations sessionStorage), MiB: "
        "a sparse ext4 image per (runtime, session id) under <data_dir>/session-storage.",
    )
    session_storage_expiry_s: float = Field(
        14 * 24 * 3600,
        gt=0,
        description="A session's persistent storage is deleted after this many seconds without use (AgentCore: "
        "14 days).",
    )
    filesystem_access_points: dict[str, str] = Field(
        {},
        description="Host directories that efsAccessPoint / s3FilesAccessPoint ARNs mount, shared by all sessions of "
        'the runtime (JSON: {"arn:aws:elasticfilesystem:...:access-point/fsap-...": "/srv/data:ro"}; :rw or :ro, '
        "default ro). ARNs not listed are refused at create/update.",
    )
    warm_pool_size: int = Field(0, description="Ready sandboxes kept per runtime (0 = scale to zero).")
    warm_pool_runtimes: dict[str, int] = Field(
        {},
        description='Per-runtime warm pool sizes by runtime name, overriding warm_pool_size (JSON: {"my_agent": 2}).',
    )
    cold_spares: bool = Field(
        True,
        description="Keep one sandbox started ahead (cold, in the background) for each served version whose agent "
        "cannot fork from a warm template, even with warm_pool_size 0; counted against max_sessions like the pool.",
    )
    spares: Literal["auto", "off"] = Field(
        "auto",
        description="auto: keep sandboxes forked ahead from each busy version's warm template (about 11 MiB each), "
        "sized from the arrival rate of its new sessions times the refill time (Little's law): none for a version "
        "without a new session within its idle timeout, at least one after one; a runtime opts out with "
        "HANGAR_SPARES=off in its environment. warm_pool_size and warm_pool_runtimes stay floors.",
    )
    spares_max_per_version: int = Field(8, ge=1, description="Most forked spares spares=auto keeps for one version.")
    spares_memory_mib: int = Field(
        256, ge=0, description="Memory all forked spares of spares=auto may use together (cgroup usage, MiB)."
    )
    spares_window_s: float = Field(
        30.0, gt=0, description="The window over which spares=auto measures each version's new-session arrival rate."
    )
    templates: bool = Field(
        True,
        description="Fork new sessions from a warm template of each served version (namespace backend; a runtime "
        "opts out with the environment variable HANGAR_TEMPLATE=off).",
    )
    log_level: str = Field("info", description="Log level of the server (debug, info, warning, error).")
    session_log_bytes: int = Field(
        8 * 1024 * 1024,
        description="Stdout and stderr kept per session (log stream), bytes; the oldest segment goes first.",
    )
    runtime_log_bytes: int = Field(
        256 * 1024 * 1024,
        description="Session logs kept per runtime (all its endpoints), bytes; the oldest streams go first.",
    )
    log_retention_s: float = Field(
        7 * 24 * 3600.0, description="How long a session's log is kept after its last event, seconds."
    )
    public_url: str | None = Field(
        None,
        description="Base URL browsers and IdPs reach this server at (OAuth2 callback URLs are built on it). "
        "Unset: http://<host>:<port>.",
    )
    vault_key_file: Path | None = Field(
        None,
        description="Key file of the token vault (AES-256-GCM keys, mode 0600, created on first start). "
        "Unset: <data_dir>/identity/vault.keys.",
    )
    image_max_bytes: int = Field(
        2 * 1024**3,
        description="Largest container image (config plus compressed layers, as declared), bytes; AgentCore's limit "
        "is 2 GB. Larger pushes and containerUris are refused.",
    )
    image_max_unpacked_bytes: int = Field(
        8 * 1024**3, description="Cap on what one image may unpack to (all layers), bytes; also stops gzip bombs."
    )
    registry_auth: dict[str, dict[str, str] | str] = Field(
        {},
        description="Credentials for pulling containerUris from other registries, by host[:port] (JSON: "
        '{"ghcr.io": {"username": "u", "password": "p"}} or {"host": "user:password"}).',
    )
    insecure_registries: str = Field(
        "",
        description="Comma-separated host[:port] registries pulled without TLS verification (and over plain HTTP "
        "when they do not speak TLS).",
    )
    registry_token_ttl_s: int = Field(
        12 * 3600, description="Lifetime of a registry password from GetAuthorizationToken (ECR's is 12 hours)."
    )
    otlp_endpoint: str | None = Field(
        None,
        description="Base URL of an OTLP/HTTP collector that gets the traces of data-plane calls (/v1/traces is "
        "appended). Unset: OTEL_EXPORTER_OTLP_TRACES_ENDPOINT or OTEL_EXPORTER_OTLP_ENDPOINT, else no tracing.",
    )
    otlp_service_name: str = Field("hangar", description="service.name of the exported traces' resource.")
    cluster: bool = Field(
        False,
        description="Gateway mode (issue 16): join the Ray cluster named by RAY_ADDRESS and place sessions on the "
        "`hangar node`s there instead of running sandboxes in this process (docs/cluster.md).",
    )

    @field_validator("account_id")
    @classmethod
    def _twelve_digits(cls, value: str) -> str:
        if not (len(value) == 12 and value.isdigit()):
            raise ValueError("account_id must be exactly 12 digits")
        return value

    @property
    def resolved_database_url(self) -> str:
        return self.database_url or f"sqlite:///{(self.data_dir / 'hangar.db').resolve()}"

    @property
    def resolved_artifacts_dir(self) -> Path:
        return (self.artifacts_dir or self.data_dir / "artifacts").resolve()

    @property
    def resolved_public_url(self) -> str:
        return (self.public_url or f"http://{self.host}:{self.port}").rstrip("/")

    @property
    def resolved_vault_key_file(self) -> Path:
        return self.vault_key_file or self.data_dir / "identity" / "vault.keys"

    @property
    def credentials_file(self) -> Path:
        return self.data_dir / "credentials"
