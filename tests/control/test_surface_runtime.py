"""The rest of CreateAgentRuntime's 2026 surface through real boto3 and the real aws CLI against ``hangar serve``.

Each member is validated as botocore's model says, stored per version and returned by Get, or refused with a
ValidationException that names the field and says why Hangar cannot honour it.
"""

from __future__ import annotations

import json
import platform
from typing import Any

import pytest
from botocore.exceptions import ClientError

from hangar.domain.wire_shapes import host_memory_mib
from tests.control.support import ROLE, container_artifact, signed, unique_name, wait_settled
from tests.control.test_aws_cli import aws, ok
from tests.support.server import HangarServer

HOST_ARCH = {"x86_64": "X86_64", "aarch64": "ARM64"}[platform.machine()]
OTHER_ARCH = "ARM64" if HOST_ARCH == "X86_64" else "X86_64"
TEMPLATE = "arn:aws:iam::123456789012:workload-identity-template/team/agents"
HOOKS = {"build": {"warmup": {"action": {"httpPost": {"path": "/warmup", "port": 8080}}}}}
SURFACE: dict[str, Any] = {
    "hooksConfiguration": HOOKS,
    "cpuConfigurations": [{"architecture": HOST_ARCH}],
    "resourceConfigurations": [{"minimumMemoryInMiB": 3072}],
    "platformVersion": "V2",
    "workloadIdentityTemplateArn": TEMPLATE,
    "lifecycleConfiguration": {"idleRuntimeSessionTimeout": 604800, "maxLifetime": 1209600},
}


def _settled(client: Any, runtime_id: str) -> dict[str, Any]:
    return wait_settled(lambda: client.get_agent_runtime(agentRuntimeId=runtime_id))


def _refused(client: Any, **members: Any) -> dict[str, Any]:
    with pytest.raises(ClientError) as excinfo:
        client.create_agent_runtime(
            agentRuntimeName=unique_name(), agentRuntimeArtifact=container_artifact(), roleArn=ROLE, **members
        )
    response = excinfo.value.response
    assert response["Error"]["Code"] == "ValidationException"
    assert response["ResponseMetadata"]["HTTPStatusCode"] == 400
    return response


def _raw_create(server: HangarServer, **members: Any) -> dict[str, Any]:
    """A create body boto3 would refuse to send (it checks required members itself)."""
    body = {"agentRuntimeName": unique_name(), "agentRuntimeArtifact": container_artifact(), "roleArn": ROLE}
    response = signed(
        server, "PUT", "/runtimes/", json.dumps({**body, **members}).encode(), {"Content-Type": "application/json"}
    )
    assert response.status_code == 400, response.text
    assert response.headers["x-amzn-ErrorType"].startswith("ValidationException")
    return response.json()


def test_every_member_is_stored_per_version_and_returned(client: Any) -> None:
    created = client.create_agent_runtime(
        agentRuntimeName=unique_name("surface"), agentRuntimeArtifact=container_artifact(), roleArn=ROLE, **SURFACE
    )
    assert created["workloadIdentityTemplateArn"] == TEMPLATE
    runtime_id = created["agentRuntimeId"]
    first = _settled(client, runtime_id)
    for name, value in SURFACE.items():
        assert first[name] == value, name

    updated = client.update_agent_runtime(
        agentRuntimeId=runtime_id,
        agentRuntimeArtifact=container_artifact(),
        roleArn=ROLE,
        hooksConfiguration={"build": {"warmup": {"action": {"httpPost": {"path": "/load"}}}}},
        metadataConfiguration={"requireMMDSV2": True},
        resourceConfigurations=[{"minimumMemoryInMiB": 4096}],
    )
    # left out of the update: the CPU architecture (immutable) and the template stay the runtime's
    assert updated["workloadIdentityTemplateArn"] == TEMPLATE
    second = _settled(client, runtime_id)
    assert second["agentRuntimeVersion"] == "2"
    assert second["hooksConfiguration"] == {"build": {"warmup": {"action": {"httpPost": {"path": "/load"}}}}}
    assert second["metadataConfiguration"] == {"requireMMDSV2": True}
    assert second["resourceConfigurations"] == [{"minimumMemoryInMiB": 4096}]
    assert second["cpuConfigurations"] == [{"architecture": HOST_ARCH}]
    assert second["workloadIdentityTemplateArn"] == TEMPLATE
    assert "platformVersion" not in second
    assert second["lifecycleConfiguration"] == {"idleRuntimeSessionTimeout": 900, "maxLifetime": 28800}

    version_1 = client.get_agent_runtime(agentRuntimeId=runtime_id, agentRuntimeVersion="1")
    assert version_1["hooksConfiguration"] == HOOKS and "metadataConfiguration" not in version_1
    assert version_1["resourceConfigurations"] == [{"minimumMemoryInMiB": 3072}]

    other = "arn:aws:iam::123456789012:workload-identity-template/other"
    client.update_agent_runtime(
        agentRuntimeId=runtime_id,
        agentRuntimeArtifact=container_artifact(),
        roleArn=ROLE,
        workloadIdentityTemplateArn=other,
    )
    assert _settled(client, runtime_id)["workloadIdentityTemplateArn"] == other


def test_a_template_cannot_be_added_later(client: Any) -> None:
    created = client.create_agent_runtime(
        agentRuntimeName=unique_name(), agentRuntimeArtifact=container_artifact(), roleArn=ROLE
    )
    runtime_id = created["agentRuntimeId"]
    assert "workloadIdentityTemplateArn" not in created
    _settled(client, runtime_id)
    with pytest.raises(ClientError) as excinfo:
        client.update_agent_runtime(
            agentRuntimeId=runtime_id,
            agentRuntimeArtifact=container_artifact(),
            roleArn=ROLE,
            workloadIdentityTemplateArn=TEMPLATE,
        )
    response = excinfo.value.response
    assert response["Error"]["Code"] == "ValidationException"
    assert "cannot have one added" in response["Error"]["Message"]
    assert response["fieldList"] == [
        {"name": "workloadIdentityTemplateArn", "message": response["fieldList"][0]["message"]}
    ]
    assert client.get_agent_runtime(agentRuntimeId=runtime_id)["agentRuntimeVersion"] == "1"


@pytest.mark.parametrize(
    ("members", "field", "says"),
    [
        ({"allowedPorts": [{"port": 9000}]}, "allowedPorts", "no session URL for additional ports"),
        ({"allowedPorts": [{"port": 8443}]}, "allowedPorts.1.member.port", "reserved port 8443"),
        (
            {"allowedPorts": [{"portRange": {"from": 8400, "to": 8500}}]},
            "allowedPorts.1.member.portRange",
            "reserved port 8443",
        ),
        (
            {"allowedPorts": [{"port": 9000}, {"portRange": {"from": 8900, "to": 9100}}]},
            "allowedPorts.1.member",
            "overlap",
        ),
        ({"allowedPorts": [{"port": 12001}]}, "allowedPorts.1.member.port", "less than or equal to 12000"),
        (
            {"cpuConfigurations": [{"architecture": OTHER_ARCH}]},
            "cpuConfigurations.1.member.architecture",
            f"this Hangar host's architecture ({HOST_ARCH})",
        ),
        (
            {"resourceConfigurations": [{"minimumMemoryInMiB": host_memory_mib() + 1}]},
            "resourceConfigurations.1.member.minimumMemoryInMiB",
            "at most this host's memory",
        ),
        (
            {"hooksConfiguration": {"build": {"warmup": {"action": {"httpPost": {"path": "/invocations"}}}}}},
            "hooksConfiguration.build.warmup.action.httpPost.path",
            "already serves",
        ),
        (
            {"hooksConfiguration": {"build": {"warmup": {"action": {"httpPost": {"path": "/" + "a" * 32}}}}}},
            "hooksConfiguration.build.warmup.action.httpPost.path",
            "length less than or equal to 32",
        ),
        (
            {"workloadIdentityTemplateArn": "arn:aws:iam::123456789012:role/NotATemplate"},
            "workloadIdentityTemplateArn",
            "regular expression pattern",
        ),
        (
            {"lifecycleConfiguration": {"idleRuntimeSessionTimeout": 60, "maxLifetime": 1209601}},
            "lifecycleConfiguration.maxLifetime",
            "less than or equal to 1209600",
        ),
    ],
)
def test_what_hangar_cannot_honour_is_refused_precisely(
    client: Any, members: dict[str, Any], field: str, says: str
) -> None:
    response = _refused(client, **members)
    assert [f["name"] for f in response["fieldList"]] == [field]
    assert says in response["Error"]["Message"]


@pytest.mark.parametrize(
    ("members", "field"),
    [
        ({"metadataConfiguration": {}}, "metadataConfiguration.requireMMDSV2"),
        ({"metadataConfiguration": {"requireMMDSV2": "yes"}}, "metadataConfiguration.requireMMDSV2"),
        ({"cpuConfigurations": [{}]}, "cpuConfigurations.1.member.architecture"),
        ({"cpuConfigurations": [{"architecture": "RISCV"}]}, "cpuConfigurations.1.member.architecture"),
        ({"cpuConfigurations": [{"architecture": HOST_ARCH}] * 2}, "cpuConfigurations"),
        ({"resourceConfigurations": [{}]}, "resourceConfigurations.1.member.minimumMemoryInMiB"),
        ({"resourceConfigurations": [{"minimumMemoryInMiB": 0}]}, "resourceConfigurations.1.member.minimumMemoryInMiB"),
        ({"hooksConfiguration": {"build": {"warmup": {}}}}, "hooksConfiguration.build.warmup.action"),
        ({"hooksConfiguration": {"build": {"warmup": {"action": {}}}}}, "hooksConfiguration.build.warmup.action"),
        ({"allowedPorts": []}, "allowedPorts"),
        ({"allowedPorts": [{"port": 9000, "portRange": {"from": 9001, "to": 9002}}]}, "allowedPorts.1.member"),
        ({"platformVersion": "V 2"}, "platformVersion"),
    ],
)
def test_shapes_boto3_would_not_send_are_refused(server: HangarServer, members: dict[str, Any], field: str) -> None:
    body = _raw_create(server, **members)
    assert [f["name"] for f in body["fieldList"]] == [field]


def test_aws_cli_sets_14_day_lifecycles_and_mmds(server: HangarServer, client: Any) -> None:
    """The CLI's own model knows lifecycleConfiguration and (on update) metadataConfiguration."""
    lifecycle = {"idleRuntimeSessionTimeout": 1209600, "maxLifetime": 1209600}
    created = ok(
        aws(
            server,
            "create-agent-runtime",
            "--agent-runtime-name",
            unique_name("cli"),
            "--agent-runtime-artifact",
            json.dumps(container_artifact()),
            "--role-arn",
            ROLE,
            "--network-configuration",
            json.dumps({"networkMode": "PUBLIC"}),
            "--lifecycle-configuration",
            json.dumps(lifecycle),
        )
    )
    runtime_id = created["agentRuntimeId"]
    _settled(client, runtime_id)
    ok(
        aws(
            server,
            "update-agent-runtime",
            "--agent-runtime-id",
            runtime_id,
            "--agent-runtime-artifact",
            json.dumps(container_artifact()),
            "--role-arn",
            ROLE,
            "--network-configuration",
            json.dumps({"networkMode": "PUBLIC"}),
            "--lifecycle-configuration",
            json.dumps(lifecycle),
            "--metadata-configuration",
            "requireMMDSV2=false",
        )
    )
    _settled(client, runtime_id)
    shown = ok(aws(server, "get-agent-runtime", "--agent-runtime-id", runtime_id))
    assert shown["lifecycleConfiguration"] == lifecycle
    assert shown["metadataConfiguration"] == {"requireMMDSV2": False}

    refused = aws(
        server,
        "update-agent-runtime",
        "--agent-runtime-id",
        runtime_id,
        "--agent-runtime-artifact",
        json.dumps(container_artifact()),
        "--role-arn",
        ROLE,
        "--network-configuration",
        json.dumps({"networkMode": "PUBLIC"}),
        "--lifecycle-configuration",
        json.dumps({"idleRuntimeSessionTimeout": 1209601}),
    )
    assert refused.returncode != 0
    assert (
        "ValidationException" in refused.stderr and "lifecycleConfiguration.idleRuntimeSessionTimeout" in refused.stderr
    )
