"""Validation, conflicts, idempotency, pagination and tags through boto3 (container artifacts: no builds)."""

from __future__ import annotations

import uuid
from typing import Any

import pytest
from botocore.exceptions import ClientError

from tests.control.support import ROLE, code_artifact, container_artifact, unique_name, wait_settled, wait_until


def _create(client: Any, **overrides: Any) -> dict[str, Any]:
    params: dict[str, Any] = {
        "agentRuntimeName": unique_name(),
        "agentRuntimeArtifact": container_artifact(),
        "roleArn": ROLE,
    }
    params.update(overrides)
    return client.create_agent_runtime(**params)


def _fails(call: Any, **params: Any) -> dict[str, Any]:
    with pytest.raises(ClientError) as excinfo:
        call(**params)
    return excinfo.value.response


def test_hyphenated_name_is_refused_with_what_is_allowed(client: Any) -> None:
    response = _fails(
        client.create_agent_runtime,
        agentRuntimeName="my-agent",
        agentRuntimeArtifact=container_artifact(),
        roleArn=ROLE,
    )
    assert response["Error"]["Code"] == "ValidationException"
    assert response["ResponseMetadata"]["HTTPStatusCode"] == 400
    message = response["Error"]["Message"]
    assert "'my-agent'" in message and "[a-zA-Z][a-zA-Z0-9_]{0,47}" in message and "hyphens" in message
    assert response["reason"] == "FieldValidationFailed"
    assert response["fieldList"][0]["name"] == "agentRuntimeName"


@pytest.mark.parametrize(
    ("overrides", "field"),
    [
        (
            {"agentRuntimeArtifact": container_artifact("Not A Reference!")},
            "agentRuntimeArtifact.containerConfiguration.containerUri",
        ),
        ({"roleArn": "arn:aws:iam::123:user/x"}, "roleArn"),
        (
            {"lifecycleConfiguration": {"idleRuntimeSessionTimeout": 1209601}},
            "lifecycleConfiguration.idleRuntimeSessionTimeout",
        ),
        (
            {"lifecycleConfiguration": {"idleRuntimeSessionTimeout": 1200, "maxLifetime": 600}},
            "lifecycleConfiguration.idleRuntimeSessionTimeout",
        ),
        ({"protocolConfiguration": {"serverProtocol": "HTTP", "port": 8443}}, "protocolConfiguration.port"),
        (
            {"requestHeaderConfiguration": {"requestHeaderAllowlist": ["X-Amz-Date"]}},
            "requestHeaderConfiguration.requestHeaderAllowlist.1.member",
        ),
        (
            {"requestHeaderConfiguration": {"requestHeaderAllowlist": ["X-Amzn-Trace-Id"]}},
            "requestHeaderConfiguration.requestHeaderAllowlist.1.member",
        ),
        (
            {"requestHeaderConfiguration": {"requestHeaderAllowlist": ["Authorization"]}},
            "requestHeaderConfiguration.requestHeaderAllowlist.1.member",
        ),
        (
            {"requestHeaderConfiguration": {"requestHeaderAllowlist": ["X-Team", "x-team"]}},
            "requestHeaderConfiguration.requestHeaderAllowlist.2.member",
        ),
        ({"environmentVariables": {f"K{i}": "v" for i in range(51)}}, "environmentVariables"),
        ({"environmentVariables": {"K": "v" * 5001}}, "environmentVariables.K"),
        ({"networkConfiguration": {"networkMode": "VPC"}}, "networkConfiguration.networkModeConfig"),
        (
            {"authorizerConfiguration": {"customJWTAuthorizer": {"discoveryUrl": "https://idp.example.com/jwks"}}},
            "authorizerConfiguration.customJWTAuthorizer.discoveryUrl",
        ),
        ({"tags": {"bad key!": "v"}}, "tags.key"),
    ],
)
def test_invalid_create_inputs(client: Any, overrides: dict[str, Any], field: str) -> None:
    response = _fails(
        client.create_agent_runtime,
        **{
            "agentRuntimeName": unique_name(),
            "agentRuntimeArtifact": container_artifact(),
            "roleArn": ROLE,
            **overrides,
        },
    )
    assert response["Error"]["Code"] == "ValidationException", response
    assert field in [f["name"] for f in response["fieldList"]], response["fieldList"]


def test_allowed_headers_jwt_and_custom_prefix_are_accepted(client: Any) -> None:
    created = _create(
        client,
        authorizerConfiguration={
            "customJWTAuthorizer": {
                "discoveryUrl": "https://idp.example.com/.well-known/openid-configuration",
                "allowedAudience": ["api"],
            }
        },
        requestHeaderConfiguration={
            "requestHeaderAllowlist": ["Authorization", "X-Amzn-Bedrock-AgentCore-Runtime-Custom-Tenant", "X-Team"]
        },
        protocolConfiguration={"serverProtocol": "MCP"},
        lifecycleConfiguration={"idleRuntimeSessionTimeout": 60, "maxLifetime": 28800},
    )
    got = client.get_agent_runtime(agentRuntimeId=created["agentRuntimeId"])
    assert got["requestHeaderConfiguration"]["requestHeaderAllowlist"][1] == (
        "X-Amzn-Bedrock-AgentCore-Runtime-Custom-Tenant"
    )
    assert got["authorizerConfiguration"]["customJWTAuthorizer"]["allowedAudience"] == ["api"]
    assert got["protocolConfiguration"] == {"serverProtocol": "MCP"}


def test_duplicate_name_conflicts(client: Any) -> None:
    name = unique_name()
    _create(client, agentRuntimeName=name)
    response = _fails(
        client.create_agent_runtime, agentRuntimeName=name, agentRuntimeArtifact=container_artifact(), roleArn=ROLE
    )
    assert (response["Error"]["Code"], response["ResponseMetadata"]["HTTPStatusCode"]) == ("ConflictException", 409)


def test_unknown_runtime_is_not_found(client: Any) -> None:
    for call, params in [
        (client.get_agent_runtime, {"agentRuntimeId": "nothing-abcdefghij"}),
        (
            client.update_agent_runtime,
            {"agentRuntimeId": "nothing-abcdefghij", "agentRuntimeArtifact": container_artifact(), "roleArn": ROLE},
        ),
        (client.delete_agent_runtime, {"agentRuntimeId": "nothing-abcdefghij"}),
        (client.list_agent_runtime_versions, {"agentRuntimeId": "nothing-abcdefghij"}),
        (client.list_agent_runtime_endpoints, {"agentRuntimeId": "nothing-abcdefghij"}),
        (client.get_agent_runtime_endpoint, {"agentRuntimeId": "nothing-abcdefghij", "endpointName": "DEFAULT"}),
    ]:
        assert _fails(call, **params)["Error"]["Code"] == "ResourceNotFoundException"
    assert _fails(client.get_agent_runtime, agentRuntimeId="no_suffix")["Error"]["Code"] == "ValidationException"


def test_client_token_replays_and_mismatches(client: Any) -> None:
    token = str(uuid.uuid4())
    name = unique_name()
    first = _create(client, agentRuntimeName=name, clientToken=token)
    again = _create(client, agentRuntimeName=name, clientToken=token)
    assert again["ResponseMetadata"]["HTTPStatusCode"] == 202
    assert (again["agentRuntimeId"], again["createdAt"]) == (first["agentRuntimeId"], first["createdAt"])
    names = [
        r["agentRuntimeName"]
        for r in client.get_paginator("list_agent_runtimes").paginate().build_full_result()["agentRuntimes"]
    ]
    assert names.count(name) == 1
    response = _fails(
        client.create_agent_runtime,
        agentRuntimeName=name,
        agentRuntimeArtifact=container_artifact(),
        roleArn=ROLE,
        description="different",
        clientToken=token,
    )
    assert response["Error"]["Code"] == "ValidationException"
    assert response["reason"] == "IdempotentParameterMismatchException"

    runtime_id = first["agentRuntimeId"]
    wait_settled(lambda: client.get_agent_runtime(agentRuntimeId=runtime_id))
    update_token = str(uuid.uuid4())
    one = client.update_agent_runtime(
        agentRuntimeId=runtime_id, agentRuntimeArtifact=container_artifact(), roleArn=ROLE, clientToken=update_token
    )
    two = client.update_agent_runtime(
        agentRuntimeId=runtime_id, agentRuntimeArtifact=container_artifact(), roleArn=ROLE, clientToken=update_token
    )
    assert one["agentRuntimeVersion"] == two["agentRuntimeVersion"] == "2"
    delete_token = str(uuid.uuid4())
    wait_settled(lambda: client.get_agent_runtime(agentRuntimeId=runtime_id))
    assert client.delete_agent_runtime(agentRuntimeId=runtime_id, clientToken=delete_token)["status"] == "DELETING"
    replay = client.delete_agent_runtime(agentRuntimeId=runtime_id, clientToken=delete_token)
    assert replay["ResponseMetadata"]["HTTPStatusCode"] == 202 and replay["status"] == "DELETING"


def test_pagination_with_opaque_tokens(client: Any) -> None:
    created = {_create(client)["agentRuntimeId"] for _ in range(5)}
    seen: list[str] = []
    token = None
    for _ in range(100):
        page = client.list_agent_runtimes(maxResults=2, **({"nextToken": token} if token else {}))
        assert len(page["agentRuntimes"]) <= 2
        seen += [r["agentRuntimeId"] for r in page["agentRuntimes"]]
        token = page.get("nextToken")
        if token is None:
            break
    assert created <= set(seen) and len(seen) == len(set(seen))
    everything = client.get_paginator("list_agent_runtimes").paginate(PaginationConfig={"PageSize": 3})
    assert [r["agentRuntimeId"] for r in everything.build_full_result()["agentRuntimes"]] == seen

    first = client.list_agent_runtimes(maxResults=1)["nextToken"]
    forged = first[:-2] + ("AA" if not first.endswith("AA") else "BB")
    for bad in (forged, "not-a-token", first.split(".")[0] + ".x"):
        response = _fails(client.list_agent_runtimes, nextToken=bad)
        assert response["Error"]["Code"] == "ValidationException"
    some_runtime = next(iter(created))
    response = _fails(client.list_agent_runtime_versions, agentRuntimeId=some_runtime, nextToken=first)
    assert response["Error"]["Code"] == "ValidationException"


def test_tags_on_runtimes_and_endpoints(client: Any) -> None:
    created = _create(client, tags={"team": "core"})
    arn = created["agentRuntimeArn"]
    assert client.list_tags_for_resource(resourceArn=arn)["tags"] == {"team": "core"}
    tagged = client.tag_resource(resourceArn=arn, tags={"env": "dev", "team": "platform"})
    assert tagged["ResponseMetadata"]["HTTPStatusCode"] == 204
    assert client.list_tags_for_resource(resourceArn=arn)["tags"] == {"team": "platform", "env": "dev"}
    untagged = client.untag_resource(resourceArn=arn, tagKeys=["team", "absent"])
    assert untagged["ResponseMetadata"]["HTTPStatusCode"] == 204
    assert client.list_tags_for_resource(resourceArn=arn)["tags"] == {"env": "dev"}

    endpoint_arn = f"{arn}/runtime-endpoint/DEFAULT"
    client.tag_resource(resourceArn=endpoint_arn, tags={"tier": "gold"})
    assert client.list_tags_for_resource(resourceArn=endpoint_arn)["tags"] == {"tier": "gold"}
    assert client.list_tags_for_resource(resourceArn=arn)["tags"] == {"env": "dev"}

    for missing in (
        arn.replace(created["agentRuntimeId"], "ghost-abcdefghij"),
        arn.replace("123456789012", "210987654321"),
        f"{arn}/runtime-endpoint/nope",
    ):
        assert _fails(client.list_tags_for_resource, resourceArn=missing)["Error"]["Code"] == (
            "ResourceNotFoundException"
        )
    too_many = {f"k{i}": "v" for i in range(50)}
    assert _fails(client.tag_resource, resourceArn=arn, tags=too_many)["Error"]["Code"] == "ValidationException"


def test_endpoint_limits_and_conflicts(client: Any) -> None:
    runtime_id = _create(client)["agentRuntimeId"]
    wait_settled(lambda: client.get_agent_runtime(agentRuntimeId=runtime_id))
    # version 1 failed (its image was never pushed), so no endpoint can point at it
    response = _fails(client.create_agent_runtime_endpoint, agentRuntimeId=runtime_id, name="prod")
    assert response["Error"]["Code"] == "ValidationException"
    response = _fails(client.create_agent_runtime_endpoint, agentRuntimeId=runtime_id, name="DEFAULT")
    assert response["Error"]["Code"] == "ConflictException"
    response = _fails(
        client.create_agent_runtime_endpoint, agentRuntimeId=runtime_id, name="prod", agentRuntimeVersion="7"
    )
    assert response["Error"]["Code"] == "ResourceNotFoundException"
    response = _fails(client.create_agent_runtime_endpoint, agentRuntimeId=runtime_id, name="bad-name")
    assert response["Error"]["Code"] == "ValidationException"


def test_the_last_version_cannot_be_deleted(client: Any) -> None:
    runtime_id = _create(client)["agentRuntimeId"]
    wait_settled(lambda: client.get_agent_runtime(agentRuntimeId=runtime_id))  # CREATE_FAILED, DEFAULT serves none
    response = _fails(client.delete_agent_runtime, agentRuntimeId=runtime_id, agentRuntimeVersion="1")
    assert response["Error"]["Code"] == "ConflictException"
    assert client.get_agent_runtime(agentRuntimeId=runtime_id, agentRuntimeVersion="1")["status"] == "CREATE_FAILED"


def test_concurrent_creates_of_one_name_make_one_runtime(client: Any) -> None:
    from concurrent.futures import ThreadPoolExecutor

    name = unique_name("race")

    def attempt(_: int) -> str:
        try:
            return _create(client, agentRuntimeName=name)["agentRuntimeId"]
        except ClientError as exc:
            return exc.response["Error"]["Code"]

    with ThreadPoolExecutor(max_workers=8) as pool:
        outcomes = list(pool.map(attempt, range(8)))
    winners = [o for o in outcomes if o.startswith(name)]
    assert len(winners) == 1 and outcomes.count("ConflictException") == 7, outcomes

    token = str(uuid.uuid4())
    other = unique_name("same")
    with ThreadPoolExecutor(max_workers=8) as pool:
        answers = list(pool.map(lambda _: _create(client, agentRuntimeName=other, clientToken=token), range(8)))
    assert len({a["agentRuntimeId"] for a in answers}) == 1


def test_a_recreated_endpoint_does_not_inherit_old_tags(client: Any) -> None:
    created = client.create_agent_runtime(
        agentRuntimeName=unique_name(), agentRuntimeArtifact=code_artifact(), roleArn=ROLE
    )
    runtime_id = created["agentRuntimeId"]
    assert wait_settled(lambda: client.get_agent_runtime(agentRuntimeId=runtime_id))["status"] == "READY"
    endpoint_arn = f"{created['agentRuntimeArn']}/runtime-endpoint/canary"
    client.create_agent_runtime_endpoint(agentRuntimeId=runtime_id, name="canary", tags={"old": "yes"})
    assert client.list_tags_for_resource(resourceArn=endpoint_arn)["tags"] == {"old": "yes"}
    wait_until(
        lambda: client.get_agent_runtime_endpoint(agentRuntimeId=runtime_id, endpointName="canary"),
        lambda e: e["status"] == "READY",
    )
    client.delete_agent_runtime_endpoint(agentRuntimeId=runtime_id, endpointName="canary")
    wait_until(
        lambda: client.list_agent_runtime_endpoints(agentRuntimeId=runtime_id),
        lambda page: [e["name"] for e in page["runtimeEndpoints"]] == ["DEFAULT"],
    )
    client.create_agent_runtime_endpoint(agentRuntimeId=runtime_id, name="canary")
    assert client.list_tags_for_resource(resourceArn=endpoint_arn)["tags"] == {}
