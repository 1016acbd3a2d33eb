"""Table definitions (SQLAlchemy Core). Migrations in ``migrations/versions`` must produce exactly these."""

from __future__ import annotations

from sqlalchemy import (
    JSON,
    BigInteger,
    Column,
    DateTime,
    ForeignKeyConstraint,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    PrimaryKeyConstraint,
    String,
    Table,
    Text,
)

metadata = MetaData(
    naming_convention={
        "ix": "ix_%(column_0_label)s",
        "uq": "uq_%(table_name)s_%(column_0_name)s",
        "ck": "ck_%(table_name)s_%(constraint_name)s",
        "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
        "pk": "pk_%(table_name)s",
    }
)

# Access keys that may sign requests. The secret is stored encrypted (Fernet, key in the data dir) because
# SigV4 verification needs the secret itself, not a hash of it.
credentials = Table(
    "credentials",
    metadata,
    Column("access_key_id", String(128), primary_key=True),
    Column("secret_encrypted", Text, nullable=False),
    Column("account_id", String(12), nullable=False),
    Column("principal_name", String(256), nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("last_used_at", DateTime(timezone=True), nullable=True),
)

# --- control plane (runtimes, versions, endpoints, tags, idempotency) -------------------------------------------

# One row per runtime. ``latest_version`` counts versions ever made, so numbers are never reused after a delete.
runtimes = Table(
    "runtimes",
    metadata,
    Column("runtime_id", String(128), primary_key=True),
    Column("name", String(48), nullable=False, unique=True),
    Column("status", String(16), nullable=False),
    Column("failure_reason", Text, nullable=True),
    Column("latest_version", Integer, nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("updated_at", DateTime(timezone=True), nullable=False),
)

# Immutable versions: ``spec`` never changes after insert; status and the prepared environment do.
runtime_versions = Table(
    "runtime_versions",
    metadata,
    Column("runtime_id", String(128), nullable=False),
    Column("version", Integer, nullable=False),
    Column("spec", JSON, nullable=False),
    Column("status", String(16), nullable=False),
    Column("failure_reason", Text, nullable=True),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("updated_at", DateTime(timezone=True), nullable=False),
    Column("code_dir", Text, nullable=True),
    Column("env_dir", Text, nullable=True),
    Column("entry_point", JSON, nullable=True),
    Column("content_hash", String(128), nullable=True),
    Column("image", JSON, nullable=True),  # the ImageConfig of a container version (migration 0005)
    PrimaryKeyConstraint("runtime_id", "version"),
    ForeignKeyConstraint(["runtime_id"], ["runtimes.runtime_id"], ondelete="CASCADE"),
    Index("ix_runtime_versions_status", "status"),
)

runtime_endpoints = Table(
    "runtime_endpoints",
    metadata,
    Column("runtime_id", String(128), nullable=False),
    Column("name", String(48), nullable=False),
    Column("endpoint_id", String(128), nullable=False, unique=True),
    Column("status", String(16), nullable=False),
    Column("live_version", Integer, nullable=True),
    Column("target_version", Integer, nullable=True),
    Column("description", Text, nullable=True),
    Column("failure_reason", Text, nullable=True),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("updated_at", DateTime(timezone=True), nullable=False),
    PrimaryKeyConstraint("runtime_id", "name"),
    ForeignKeyConstraint(["runtime_id"], ["runtimes.runtime_id"], ondelete="CASCADE"),
    Index("ix_runtime_endpoints_status", "status"),
)

# Hangar's traffic split of an endpoint (domain/split.py): weights per version, applied while the endpoint's live
# version is still base_version. Goes with its runtime; a new endpoint of the same name starts without one.
endpoint_splits = Table(
    "endpoint_splits",
    metadata,
    Column("runtime_id", String(128), nullable=False),
    Column("endpoint_name", String(48), nullable=False),
    Column("base_version", Integer, nullable=False),
    Column("weights", JSON, nullable=False),
    Column("updated_at", DateTime(timezone=True), nullable=False),
    PrimaryKeyConstraint("runtime_id", "endpoint_name"),
    ForeignKeyConstraint(["runtime_id"], ["runtimes.runtime_id"], ondelete="CASCADE"),
)

# Tags of a runtime (endpoint_name "") or of one of its endpoints; they go when the runtime goes.
resource_tags = Table(
    "resource_tags",
    metadata,
    Column("runtime_id", String(128), nullable=False),
    Column("endpoint_name", String(48), nullable=False),
    Column("key", String(128), nullable=False),
    Column("value", String(256), nullable=False),
    PrimaryKeyConstraint("runtime_id", "endpoint_name", "key"),
    ForeignKeyConstraint(["runtime_id"], ["runtimes.runtime_id"], ondelete="CASCADE"),
)

# clientToken → the answer given, so a retried write returns the same answer and does nothing twice.
idempotency_tokens = Table(
    "idempotency_tokens",
    metadata,
    Column("operation", String(64), nullable=False),
    Column("client_token", String(256), nullable=False),
    Column("request_hash", String(64), nullable=False),
    Column("response", JSON, nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False),
    PrimaryKeyConstraint("operation", "client_token"),
)

# Secrets of the control plane shared by every gateway on this store (e.g. the nextToken signing key).
control_secrets = Table(
    "control_secrets",
    metadata,
    Column("name", String(64), primary_key=True),
    Column("value", Text, nullable=False),
)

# --- identity (workload identities, credential providers; secrets sealed by the token vault) --------------------

# A workload identity; one per runtime (named by its runtime id, gone with the runtime) or created on its own.
workload_identities = Table(
    "workload_identities",
    metadata,
    Column("name", String(255), primary_key=True),
    Column("allowed_return_urls", JSON, nullable=False),
    Column("runtime_id", String(128), nullable=True),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("updated_at", DateTime(timezone=True), nullable=False),
    ForeignKeyConstraint(["runtime_id"], ["runtimes.runtime_id"], ondelete="CASCADE"),
)

# API-key credential providers: the key itself only as a vault ciphertext bound to the provider's name.
api_key_providers = Table(
    "api_key_providers",
    metadata,
    Column("name", String(128), primary_key=True),
    Column("api_key_sealed", LargeBinary, nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("updated_at", DateTime(timezone=True), nullable=False),
)

# OAuth2 credential providers: the vendor's configuration without its client secret, which is sealed apart.
oauth2_providers = Table(
    "oauth2_providers",
    metadata,
    Column("name", String(128), primary_key=True),
    Column("vendor", String(64), nullable=False),
    Column("config", JSON, nullable=False),
    Column("client_secret_sealed", LargeBinary, nullable=True),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("updated_at", DateTime(timezone=True), nullable=False),
)

# Tags of identity resources (workload identities, credential providers), by ARN.
identity_tags = Table(
    "identity_tags",
    metadata,
    Column("resource_arn", String(1011), nullable=False),
    Column("key", String(128), nullable=False),
    Column("value", String(256), nullable=False),
    PrimaryKeyConstraint("resource_arn", "key"),
)

# --- identity data plane (token cache, pending USER_FEDERATION sessions; tokens sealed by the token vault) -------

# Resource tokens per workload + user ('' for none) + provider + flow + sorted scopes (``scopes_key`` is their
# sha256), so two users of one workload never share a token.
identity_tokens = Table(
    "identity_tokens",
    metadata,
    Column("workload", String(255), nullable=False),
    Column("user_id", String(128), nullable=False),
    Column("provider", String(128), nullable=False),
    Column("flow", String(32), nullable=False),
    Column("scopes_key", String(64), nullable=False),
    Column("scopes", JSON, nullable=False),
    Column("access_token_sealed", LargeBinary, nullable=False),
    Column("refresh_token_sealed", LargeBinary, nullable=True),
    Column("expires_at", DateTime(timezone=True), nullable=True),
    Column("updated_at", DateTime(timezone=True), nullable=False),
    PrimaryKeyConstraint("workload", "user_id", "provider", "flow", "scopes_key"),
    ForeignKeyConstraint(["workload"], ["workload_identities.name"], ondelete="CASCADE"),
    ForeignKeyConstraint(["provider"], ["oauth2_providers.name"], ondelete="CASCADE"),
)

# USER_FEDERATION sessions between the authorization URL and CompleteResourceTokenAuth. ``state_hash`` is the
# sha256 of the state sent to the IdP (the state itself is never stored); the PKCE verifier and tokens are sealed.
identity_oauth_sessions = Table(
    "identity_oauth_sessions",
    metadata,
    Column("session_id", String(64), primary_key=True),
    Column("state_hash", String(64), nullable=False, unique=True),
    Column("workload", String(255), nullable=False),
    Column("user_id", String(128), nullable=False),
    Column("provider", String(128), nullable=False),
    Column("scopes", JSON, nullable=False),
    Column("verifier_sealed", LargeBinary, nullable=False),
    Column("return_url", Text, nullable=True),
    Column("custom_state_sealed", LargeBinary, nullable=True),
    Column("status", String(16), nullable=False),
    Column("access_token_sealed", LargeBinary, nullable=True),
    Column("refresh_token_sealed", LargeBinary, nullable=True),
    Column("token_expires_at", DateTime(timezone=True), nullable=True),
    Column("expires_at", DateTime(timezone=True), nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False),
    ForeignKeyConstraint(["workload"], ["workload_identities.name"], ondelete="CASCADE"),
    ForeignKeyConstraint(["provider"], ["oauth2_providers.name"], ondelete="CASCADE"),
)

# Hangar's own container registry (ECR): repositories, the manifests pushed to each (bodies are blobs on disk,
# under their digest) and the tags pointing at them. Blobs themselves are content-addressed files, not rows.
image_repositories = Table(
    "image_repositories",
    metadata,
    Column("name", String(256), primary_key=True),
    Column("created_at", DateTime(timezone=True), nullable=False),
)

image_manifests = Table(
    "image_manifests",
    metadata,
    Column("repository", String(256), nullable=False),
    Column("digest", String(71), nullable=False),
    Column("media_type", String(255), nullable=False),
    Column("artifact_type", String(255), nullable=True),
    Column("subject", String(71), nullable=True),
    Column("size", Integer, nullable=False),  # the manifest's own bytes
    Column("image_size", BigInteger, nullable=False),  # config + layers (an index: its manifests)
    Column("pushed_at", DateTime(timezone=True), nullable=False),
    PrimaryKeyConstraint("repository", "digest"),
    ForeignKeyConstraint(["repository"], ["image_repositories.name"], ondelete="CASCADE"),
)

image_tags = Table(
    "image_tags",
    metadata,
    Column("repository", String(256), nullable=False),
    Column("tag", String(128), nullable=False),
    Column("digest", String(71), nullable=False),
    Column("updated_at", DateTime(timezone=True), nullable=False),
    PrimaryKeyConstraint("repository", "tag"),
    ForeignKeyConstraint(
        ["repository", "digest"], ["image_manifests.repository", "image_manifests.digest"], ondelete="CASCADE"
    ),
)


# PutResourcePolicy documents of a runtime (endpoint_name "") or of one of its endpoints, as the caller sent them.
resource_policies = Table(
    "resource_policies",
    metadata,
    Column("runtime_id", String(128), nullable=False),
    Column("endpoint_name", String(48), nullable=False),
    Column("policy", Text(), nullable=False),
    Column("updated_at", DateTime(timezone=True), nullable=False),
    PrimaryKeyConstraint("runtime_id", "endpoint_name"),
    ForeignKeyConstraint(["runtime_id"], ["runtimes.runtime_id"], ondelete="CASCADE"),
)


# Cluster mode (issue 16): the node serving each live session, so any gateway routes its later calls there. No
# foreign key: a binding outlives nothing (deleted when its session ends or its node dies).
session_placements = Table(
    "session_placements",
    metadata,
    Column("runtime_id", String(128), nullable=False),
    Column("session_id", String(256), nullable=False),
    Column("node", String(128), nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False),
    PrimaryKeyConstraint("runtime_id", "session_id"),
    Index("ix_session_placements_node", "node"),
)
