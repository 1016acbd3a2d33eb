"""Domain objects → the JSON documents AgentCore answers with (GetAgentRuntime, AgentRuntime summary, ...)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from hangar.domain.arns import Place
from hangar.domain.endpoint import Endpoint
from hangar.domain.runtime import Runtime, RuntimeSpec, Status, Version


def iso(moment: datetime) -> str:
    """ISO-8601 with microseconds and offset, as the real service prints DateTimestamp values."""
    return moment.isoformat()


def workload_identity(place: Place, runtime_id: str) -> dict[str, str]:
    return {"workloadIdentityArn": place.workload_identity_arn(runtime_id)}


def template_arn(spec: RuntimeSpec) -> dict[str, str]:
    """``workloadIdentityTemplateArn`` of Create/UpdateAgentRuntime's answer, when the runtime has one."""
    arn = spec.extras.get("workloadIdentityTemplateArn")
    return {} if arn is None else {"workloadIdentityTemplateArn": arn}


def runtime_detail(place: Place, runtime: Runtime, version: Version, *, of_version: bool) -> dict[str, Any]:
    """GetAgentRuntime: the newest version's configuration with the runtime's status, or one version's own."""
    spec = version.spec
    status = version.status if of_version else runtime.status
    reason = version.failure_reason if of_version else runtime.failure_reason
    document: dict[str, Any] = {
        "agentRuntimeArn": place.runtime_arn(runtime.runtime_id),
        "agentRuntimeName": runtime.name,
        "agentRuntimeId": runtime.runtime_id,
        "agentRuntimeVersion": str(version.number),
        "createdAt": iso(runtime.created_at if not of_version else version.created_at),
        "lastUpdatedAt": iso(max(runtime.updated_at, version.updated_at) if not of_version else version.updated_at),
        "roleArn": spec.role_arn,
        "status": status.value,
        "lifecycleConfiguration": spec.lifecycle,
        "networkConfiguration": spec.network,
        "protocolConfiguration": spec.protocol,
        "agentRuntimeArtifact": spec.artifact,
        "workloadIdentityDetails": workload_identity(place, runtime.runtime_id),
        "environmentVariables": spec.environment,
    }
    if spec.description is not None:
        document["description"] = spec.description
    if spec.authorizer is not None:
        document["authorizerConfiguration"] = spec.authorizer
    if spec.request_headers is not None:
        document["requestHeaderConfiguration"] = spec.request_headers
    if reason and status in (Status.CREATE_FAILED, Status.UPDATE_FAILED, Status.DELETE_FAILED):
        document["failureReason"] = reason
    document.update(spec.extras)
    return document


def runtime_summary(place: Place, runtime: Runtime, version: Version | None) -> dict[str, Any]:
    """One ``AgentRuntime`` entry of ListAgentRuntimes."""
    return {
        "agentRuntimeArn": place.runtime_arn(runtime.runtime_id),
        "agentRuntimeId": runtime.runtime_id,
        "agentRuntimeVersion": str(version.number if version else runtime.latest_version),
        "agentRuntimeName": runtime.name,
        "description": (version.spec.description if version else None) or "",
        "lastUpdatedAt": iso(runtime.updated_at),
        "status": runtime.status.value,
    }


def version_summary(place: Place, runtime: Runtime, version: Version) -> dict[str, Any]:
    """One ``AgentRuntime`` entry of ListAgentRuntimeVersions: the version's own status."""
    return {
        "agentRuntimeArn": place.runtime_arn(runtime.runtime_id),
        "agentRuntimeId": runtime.runtime_id,
        "agentRuntimeVersion": str(version.number),
        "agentRuntimeName": runtime.name,
        "description": version.spec.description or "",
        "lastUpdatedAt": iso(version.updated_at),
        "status": version.status.value,
    }


def endpoint_detail(place: Place, endpoint: Endpoint) -> dict[str, Any]:
    """GetAgentRuntimeEndpoint, and one ``AgentRuntimeEndpoint`` entry of ListAgentRuntimeEndpoints."""
    document: dict[str, Any] = {
        "name": endpoint.name,
        "id": endpoint.endpoint_id,
        "agentRuntimeEndpointArn": place.endpoint_arn(endpoint.runtime_id, endpoint.name),
        "agentRuntimeArn": place.runtime_arn(endpoint.runtime_id),
        "status": endpoint.status.value,
        "createdAt": iso(endpoint.created_at),
        "lastUpdatedAt": iso(endpoint.updated_at),
    }
    if endpoint.live_version is not None:
        document["liveVersion"] = str(endpoint.live_version)
    if endpoint.target_version is not None:
        document["targetVersion"] = str(endpoint.target_version)
    if endpoint.description is not None:
        document["description"] = endpoint.description
    if endpoint.failure_reason and endpoint.status in (Status.CREATE_FAILED, Status.UPDATE_FAILED):
        document["failureReason"] = endpoint.failure_reason
    return document
