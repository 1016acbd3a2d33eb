"""Runtimes and their immutable versions: the configuration one version runs with, its states and rules.

A runtime is a name plus a numbered list of versions. Each CreateAgentRuntime/UpdateAgentRuntime call makes one
version whose ``RuntimeSpec`` never changes afterwards; the version moves CREATING/UPDATING → READY or
*_FAILED once its artifact is prepared. The runtime's own status mirrors the newest operation on it.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import Any

from hangar.domain.arns import ROLE_ARN
from hangar.domain.invocation import PreparedVersion
from hangar.domain.names import RUNTIME_NAME, RUNTIME_NAME_HINT
from hangar.domain.validation import Checker
from hangar.domain.wire_shapes import check_authorizer, check_extras, check_hook_paths, check_request_headers


class Status(StrEnum):
    """AgentRuntimeStatus and AgentRuntimeEndpointStatus (the two enums are identical)."""

    CREATING = "CREATING"
    CREATE_FAILED = "CREATE_FAILED"
    UPDATING = "UPDATING"
    UPDATE_FAILED = "UPDATE_FAILED"
    READY = "READY"
    DELETING = "DELETING"
    DELETE_FAILED = "DELETE_FAILED"


IN_PROGRESS = frozenset({Status.CREATING, Status.UPDATING})
FAILED = frozenset({Status.CREATE_FAILED, Status.UPDATE_FAILED, Status.DELETE_FAILED})

RUNTIMES = ("PYTHON_3_10", "PYTHON_3_11", "PYTHON_3_12", "PYTHON_3_13", "PYTHON_3_14", "NODE_22")
NETWORK_MODES = ("PUBLIC", "VPC")
SERVER_PROTOCOLS = ("MCP", "HTTP", "A2A", "AGUI")
DEFAULT_IDLE_TIMEOUT_S = 900
DEFAULT_MAX_LIFETIME_S = 28800
# 60 s - 14 days for every runtime, as botocore's current model allows (AgentCore's 2026 limits).
LIFECYCLE_MIN_S = 60
LIFECYCLE_MAX_S = 1209600

# Bucket names as S3 allows them; the model's pattern.
S3_BUCKET = r"[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]"
# Any OCI image reference (registry[:port]/repo[:tag][@digest]); AgentCore itself only accepts ECR.
OCI_REFERENCE = (
    # registry: has a dot, a port, or is localhost (else the first part belongs to the repository, as in Docker)
    r"(?:(?:localhost|[a-zA-Z0-9-]+(?:\.[a-zA-Z0-9-]+)+)(?::[0-9]{1,5})?/|[a-zA-Z0-9-]+:[0-9]{1,5}/)?"
    r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*(?:/[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*)*"
    r"(?::[A-Za-z0-9_][A-Za-z0-9_.-]{0,127})?(?:@[A-Za-z][A-Za-z0-9]*(?:[+._-][A-Za-z][A-Za-z0-9]*)*:[0-9a-fA-F]{32,})?"
)
SERVER_PATH = r"/[A-Za-z0-9\-._~/%]*"

# Members stored as given (their unknown parts included) are capped, so a version row stays small.
MAX_ECHOED_MEMBER_BYTES = 64 * 1024

# Newer optional members, stored per version and returned by Get (checked in ``wire_shapes.check_extras``).
EXTRA_MEMBERS = (
    "hooksConfiguration",
    "metadataConfiguration",
    "filesystemConfigurations",
    "capacityProviderConfiguration",
    "platformVersion",
    "allowedPorts",
    "resourceConfigurations",
    "cpuConfigurations",
    "workloadIdentityTemplateArn",
)


@dataclass(frozen=True)
class CodeLocation:
    """``codeConfiguration`` of a version, flattened."""

    bucket: str
    prefix: str
    version_id: str | None
    runtime: str
    entry_point: tuple[str, ...]


@dataclass(frozen=True)
class RuntimeSpec:
    """Everything one version runs with, in wire form with AgentCore's defaults filled in. Immutable."""

    artifact: dict[str, Any]
    role_arn: str
    network: dict[str, Any]
    lifecycle: dict[str, int]
    protocol: dict[str, Any]
    description: str | None = None
    environment: dict[str, str] = field(default_factory=dict)
    authorizer: dict[str, Any] | None = None
    request_headers: dict[str, Any] | None = None
    extras: dict[str, Any] = field(default_factory=dict)

    @property
    def code(self) -> CodeLocation | None:
        config = self.artifact.get("codeConfiguration")
        if config is None:
            return None
        s3 = config["code"]["s3"]
        return CodeLocation(
            bucket=s3["bucket"],
            prefix=s3["prefix"],
            version_id=s3.get("versionId"),
            runtime=config["runtime"],
            entry_point=tuple(config["entryPoint"]),
        )

    @property
    def container_uri(self) -> str | None:
        config = self.artifact.get("containerConfiguration")
        return None if config is None else config["containerUri"]

    def to_json(self) -> dict[str, Any]:
        return {
            "agentRuntimeArtifact": self.artifact,
            "roleArn": self.role_arn,
            "networkConfiguration": self.network,
            "lifecycleConfiguration": self.lifecycle,
            "protocolConfiguration": self.protocol,
            "description": self.description,
            "environmentVariables": self.environment,
            "authorizerConfiguration": self.authorizer,
            "requestHeaderConfiguration": self.request_headers,
            "extras": self.extras,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> RuntimeSpec:
        return cls(
            artifact=data["agentRuntimeArtifact"],
            role_arn=data["roleArn"],
            network=data["networkConfiguration"],
            lifecycle=data["lifecycleConfiguration"],
            protocol=data["protocolConfiguration"],
            description=data.get("description"),
            environment=data.get("environmentVariables") or {},
            authorizer=data.get("authorizerConfiguration"),
            request_headers=data.get("requestHeaderConfiguration"),
            extras=data.get("extras") or {},
        )


@dataclass(frozen=True)
class Runtime:
    runtime_id: str
    name: str
    status: Status
    latest_version: int  # highest version number ever made (numbers are never reused)
    created_at: datetime
    updated_at: datetime
    failure_reason: str | None = None


@dataclass(frozen=True)
class Version:
    runtime_id: str
    number: int
    spec: RuntimeSpec
    status: Status
    created_at: datetime
    updated_at: datetime
    failure_reason: str | None = None
    prepared: PreparedVersion | None = None


def check_runtime_name(check: Checker, value: Any, path: str = "agentRuntimeName") -> str | None:
    return check.string(value, path, min_len=1, max_len=48, pattern=RUNTIME_NAME, hint=RUNTIME_NAME_HINT)


def parse_runtime_spec(body: dict[str, Any], check: Checker) -> RuntimeSpec | None:
    """Validate the version-defining members of a Create/UpdateAgentRuntime body; None if any is wrong."""
    artifact = _check_artifact(check, check.required(body, "agentRuntimeArtifact", "agentRuntimeArtifact"))
    role_arn = check.string(
        check.required(body, "roleArn", "roleArn"), "roleArn", min_len=1, max_len=2048, pattern=ROLE_ARN
    )
    network = _check_network(check, body.get("networkConfiguration"))
    extras = check_extras(check, body)
    lifecycle = _check_lifecycle(check, body.get("lifecycleConfiguration"))
    protocol = _check_protocol(check, body.get("protocolConfiguration"))
    if protocol is not None:
        check_hook_paths(check, extras.get("hooksConfiguration"), protocol)
    description = check.string(body.get("description"), "description", min_len=1, max_len=4096)
    environment = _check_environment(check, body.get("environmentVariables"))
    authorizer = check_authorizer(check, body.get("authorizerConfiguration"))
    headers = check_request_headers(check, body.get("requestHeaderConfiguration"), jwt=authorizer is not None)
    for name in ("authorizerConfiguration", *EXTRA_MEMBERS):  # as sent: a huge member is refused, not trimmed
        given = body.get(name)
        if given is not None and len(json.dumps(given)) > MAX_ECHOED_MEMBER_BYTES:
            check.fail(name, f"Member must be smaller than {MAX_ECHOED_MEMBER_BYTES} bytes as JSON", quote=False)
    if check.problems or artifact is None or role_arn is None or network is None or lifecycle is None:
        return None
    if protocol is None:
        return None
    return RuntimeSpec(
        artifact=artifact,
        role_arn=role_arn,
        network=network,
        lifecycle=lifecycle,
        protocol=protocol,
        description=description,
        environment=environment or {},
        authorizer=authorizer,
        request_headers=headers,
        extras=extras,
    )


def _check_artifact(check: Checker, value: Any) -> dict[str, Any] | None:
    path = "agentRuntimeArtifact"
    artifact = check.struct(value, path)
    if artifact is None:
        return None
    kind = check.union(artifact, path, ("containerConfiguration", "codeConfiguration"))
    if kind == "containerConfiguration":
        config = check.struct(artifact[kind], f"{path}.{kind}")
        if config is None:
            return None
        uri = check.string(
            check.required(config, "containerUri", f"{path}.{kind}.containerUri"),
            f"{path}.{kind}.containerUri",
            min_len=1,
            max_len=1024,
            pattern=OCI_REFERENCE,
            hint=" (an OCI image reference: [registry/]repository[:tag][@digest])",
        )
        return None if uri is None else {kind: {"containerUri": uri}}
    if kind == "codeConfiguration":
        return _check_code(check, artifact[kind], f"{path}.{kind}")
    return None


def _check_code(check: Checker, value: Any, path: str) -> dict[str, Any] | None:
    config = check.struct(value, path)
    if config is None:
        return None
    code = check.struct(check.required(config, "code", f"{path}.code"), f"{path}.code")
    s3_out: dict[str, Any] | None = None
    if code is not None and check.union(code, f"{path}.code", ("s3",)) == "s3":
        s3 = check.struct(code["s3"], f"{path}.code.s3")
        if s3 is not None:
            bucket = check.string(
                check.required(s3, "bucket", f"{path}.code.s3.bucket"),
                f"{path}.code.s3.bucket",
                min_len=3,
                max_len=63,
                pattern=S3_BUCKET,
            )
            prefix = check.string(
                check.required(s3, "prefix", f"{path}.code.s3.prefix"),
                f"{path}.code.s3.prefix",
                min_len=1,
                max_len=1024,
            )
            if prefix is not None and ("\x00" in prefix or any(p == ".." for p in prefix.split("/"))):
                check.fail(f"{path}.code.s3.prefix", "Member must not contain '..' segments or NUL", prefix)
                prefix = None
            version_id = check.string(s3.get("versionId"), f"{path}.code.s3.versionId", min_len=3, max_len=1024)
            if bucket is not None and prefix is not None:
                s3_out = {"bucket": bucket, "prefix": prefix}
                if version_id is not None:
                    s3_out["versionId"] = version_id
    runtime = check.enum(check.required(config, "runtime", f"{path}.runtime"), f"{path}.runtime", RUNTIMES)
    entry = check.strings(
        check.required(config, "entryPoint", f"{path}.entryPoint"),
        f"{path}.entryPoint",
        min_items=1,
        max_items=2,
        min_len=1,
        max_len=128,
    )
    if entry is not None:
        for index, item in enumerate(entry):
            if item.startswith("/") or ".." in item.split("/") or "\x00" in item:
                check.fail(f"{path}.entryPoint.{index + 1}.member", "Member must be a path inside the code", item)
                entry = None
                break
    if s3_out is None or runtime is None or entry is None:
        return None
    return {"codeConfiguration": {"code": {"s3": s3_out}, "runtime": runtime, "entryPoint": entry}}


def _check_network(check: Checker, value: Any) -> dict[str, Any] | None:
    """Optional in the current model, required by older CLIs; absent means PUBLIC."""
    path = "networkConfiguration"
    if value is None:
        return {"networkMode": "PUBLIC"}
    network = check.struct(value, path)
    if network is None:
        return None
    mode = check.enum(
        check.required(network, "networkMode", f"{path}.networkMode"), f"{path}.networkMode", NETWORK_MODES
    )
    out: dict[str, Any] = {"networkMode": mode}
    vpc = check.struct(network.get("networkModeConfig"), f"{path}.networkModeConfig")
    if vpc is not None:
        vpc_path = f"{path}.networkModeConfig"
        groups = check.strings(
            check.required(vpc, "securityGroups", f"{vpc_path}.securityGroups"),
            f"{vpc_path}.securityGroups",
            min_items=1,
            max_items=16,
            pattern=r"sg-[0-9a-zA-Z]{8,17}",
        )
        subnets = check.strings(
            check.required(vpc, "subnets", f"{vpc_path}.subnets"),
            f"{vpc_path}.subnets",
            min_items=1,
            max_items=16,
            pattern=r"subnet-[0-9a-zA-Z]{8,17}",
        )
        s3_endpoint = check.boolean(vpc.get("requireServiceS3Endpoint"), f"{vpc_path}.requireServiceS3Endpoint")
        out["networkModeConfig"] = {"securityGroups": groups, "subnets": subnets}
        if s3_endpoint is not None:
            out["networkModeConfig"]["requireServiceS3Endpoint"] = s3_endpoint
    elif mode == "VPC":
        check.fail(f"{path}.networkModeConfig", "Member must not be null when networkMode is VPC")
    return out if mode is not None else None


def _check_lifecycle(check: Checker, value: Any) -> dict[str, int] | None:
    path = "lifecycleConfiguration"
    lifecycle = check.struct(value, path) if value is not None else {}
    if lifecycle is None:
        return None
    idle = check.integer(
        _or_default(lifecycle.get("idleRuntimeSessionTimeout"), DEFAULT_IDLE_TIMEOUT_S),
        f"{path}.idleRuntimeSessionTimeout",
        minimum=LIFECYCLE_MIN_S,
        maximum=LIFECYCLE_MAX_S,
    )
    max_life = check.integer(
        _or_default(lifecycle.get("maxLifetime"), DEFAULT_MAX_LIFETIME_S),
        f"{path}.maxLifetime",
        minimum=LIFECYCLE_MIN_S,
        maximum=LIFECYCLE_MAX_S,
    )
    if idle is None or max_life is None:
        return None
    if idle > max_life:
        check.fail(
            f"{path}.idleRuntimeSessionTimeout",
            f"Member must be less than or equal to maxLifetime ({max_life})",
            idle,
        )
        return None
    return {"idleRuntimeSessionTimeout": idle, "maxLifetime": max_life}


def _or_default(value: Any, default: int) -> Any:
    """An explicit JSON null means "not given", as it does for AWS."""
    return default if value is None else value


def _check_protocol(check: Checker, value: Any) -> dict[str, Any] | None:
    path = "protocolConfiguration"
    if value is None:
        return {"serverProtocol": "HTTP"}
    protocol = check.struct(value, path)
    if protocol is None:
        return None
    server = check.enum(
        check.required(protocol, "serverProtocol", f"{path}.serverProtocol"),
        f"{path}.serverProtocol",
        SERVER_PROTOCOLS,
    )
    port = check.integer(protocol.get("port"), f"{path}.port", minimum=8000, maximum=12000)
    if port == 8443:
        check.fail(f"{path}.port", "Member must not be the reserved port 8443", port)
        port = None
    server_path = check.string(protocol.get("path"), f"{path}.path", min_len=1, max_len=2048, pattern=SERVER_PATH)
    if server is None:
        return None
    out: dict[str, Any] = {"serverProtocol": server}
    if port is not None:
        out["port"] = port
    if server_path is not None:
        out["path"] = server_path
    return out


def _check_environment(check: Checker, value: Any) -> dict[str, str] | None:
    path = "environmentVariables"
    env = check.mapping(value, path, max_len=50)
    if env is None:
        return None
    out: dict[str, str] = {}
    for key, item in env.items():
        if not 1 <= len(key) <= 100 or "=" in key or "\x00" in key:
            check.fail(f"{path}.key", "Member must have length between 1 and 100 and contain no '=' or NUL", key)
            continue
        text = check.string(item, f"{path}.{key}", min_len=0, max_len=5000)
        if text is None:
            if item is None:
                check.fail_null(f"{path}.{key}")
            continue
        if "\x00" in text:
            check.fail(f"{path}.{key}", "Member must not contain NUL")
            continue
        out[key] = text
    return out
