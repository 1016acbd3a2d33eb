"""ARNs of runtimes, endpoints and workload identities, built from the installation's account and region."""

from __future__ import annotations

import re
from dataclasses import dataclass

from hangar.domain.names import ENDPOINT_NAME, RUNTIME_ID

RUNTIME_ARN = re.compile(
    rf"arn:aws(?:-[^:]+)?:bedrock-agentcore:(?P<region>[a-z0-9-]+):(?P<account>[0-9]{{12}}):runtime/(?P<id>{RUNTIME_ID})"
)
ENDPOINT_ARN = re.compile(RUNTIME_ARN.pattern + rf"/runtime-endpoint/(?P<endpoint>{ENDPOINT_NAME})")
TAGGABLE_ARN = r"arn:(?:[^:]+)?:bedrock-agentcore:[a-z0-9-]+:[0-9]{12}:([a-z-]+/[^/]+)(?:/[a-z-]+/[^/]+)*"
ROLE_ARN = r"arn:aws(-[^:]+)?:iam::([0-9]{12})?:role/.+"


@dataclass(frozen=True)
class Place:
    """Where resources live: one account in one region."""

    account_id: str
    region: str

    def runtime_arn(self, runtime_id: str) -> str:
        return f"arn:aws:bedrock-agentcore:{self.region}:{self.account_id}:runtime/{runtime_id}"

    def endpoint_arn(self, runtime_id: str, endpoint_name: str) -> str:
        return f"{self.runtime_arn(runtime_id)}/runtime-endpoint/{endpoint_name}"

    def workload_identity_arn(self, runtime_id: str) -> str:
        return (
            f"arn:aws:bedrock-agentcore:{self.region}:{self.account_id}"
            f":workload-identity-directory/default/workload-identity/{runtime_id}"
        )


@dataclass(frozen=True)
class ResourceRef:
    """A runtime (``endpoint_name`` None) or one of its endpoints, named by ARN."""

    account_id: str
    region: str
    runtime_id: str
    endpoint_name: str | None = None


def parse_resource_arn(arn: str) -> ResourceRef | None:
    """A runtime or endpoint ARN split into parts; None for anything else."""
    found = ENDPOINT_ARN.fullmatch(arn)
    if found is not None:
        return ResourceRef(found["account"], found["region"], found["id"], found["endpoint"])
    found = RUNTIME_ARN.fullmatch(arn)
    if found is not None:
        return ResourceRef(found["account"], found["region"], found["id"])
    return None
