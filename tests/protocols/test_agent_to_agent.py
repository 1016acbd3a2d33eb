"""Agent to agent: a session calls another runtime through its identity channel, as its runtime's execution role,
allowed only by the target's resource-based policy (PutResourcePolicy), explicit Deny winning, default deny.

One real ``hangar serve`` (namespace backend: the identity channel needs it). The caller is an HTTP agent that uses
boto3's ``invoke_agent_runtime`` and the a2a-sdk client with no configuration (endpoint, region and credentials
from its environment); the callee is an A2A agent on ``bedrock_agentcore``'s A2A helper. Everything is driven with
boto3 from the outside.
"""

from __future__ import annotations

import json
import os
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest
from botocore.exceptions import ClientError

from tests.auth.jwt_support import rules_for
from tests.control.support import signed
from tests.dataplane.support import BUCKET, new_session_id, seeded_server, wait_for
from tests.support.idp_common import RunningIdp
from tests.support.idp_panva import start_panva
from tests.support.server import HANGAR_BIN, HangarServer, read_admin_key

CALLER_ROLE = "arn:aws:iam::123456789012:role/caller-agent"
OTHER_ROLE = "arn:aws:iam::123456789012:role/other-agent"
A2A = {"serverProtocol": "A2A"}


@pytest.fixture(scope="module")
def hangar() -> Iterator[HangarServer]:
    with seeded_server("hangar-a2a-calls-", ("a2acaller", "agentcorea2a")) as server:
        backend = signed(server, "GET", "/hangar/sessions/").json()["backend"]["backend"]
        if backend != "namespace":
            pytest.skip(f"agent-to-agent calls need the identity channel (namespace backend), this host has {backend}")
        yield server


@pytest.fixture(scope="module")
def control(hangar: HangarServer) -> Any:
    return hangar.boto3_client("bedrock-agentcore-control")


@pytest.fixture(scope="module")
def data(hangar: HangarServer) -> Any:
    return hangar.boto3_client("bedrock-agentcore")


def _deploy(control: Any, agent: str, role: str, **extra: Any) -> dict[str, Any]:
    created = control.create_agent_runtime(
        agentRuntimeName=f"{agent}_{uuid.uuid4().hex[:8]}",
        agentRuntimeArtifact={
            "codeConfiguration": {
                "code": {"s3": {"bucket": BUCKET, "prefix": f"{agent}/"}},
                "runtime": "PYTHON_3_11",
                "entryPoint": ["main.py"],
            }
        },
        roleArn=role,
        **extra,
    )

    def ready() -> dict[str, Any] | None:
        doc = control.get_agent_runtime(agentRuntimeId=created["agentRuntimeId"])
        assert doc["status"] not in ("CREATE_FAILED", "UPDATE_FAILED"), doc.get("failureReason")
        return doc if doc["status"] == "READY" else None

    found: dict[str, Any] = wait_for(ready, timeout=300)
    return found


@pytest.fixture(scope="module")
def callee(control: Any) -> dict[str, Any]:
    return _deploy(control, "agentcorea2a", OTHER_ROLE, protocolConfiguration=A2A)


@pytest.fixture(scope="module")
def caller(control: Any) -> dict[str, Any]:
    return _deploy(control, "a2acaller", CALLER_ROLE)


@pytest.fixture(scope="module")
def stranger(control: Any) -> dict[str, Any]:
    """A third runtime, with another role, that no policy names."""
    return _deploy(control, "a2acaller", OTHER_ROLE)


def _policy(resource: str, *statements: dict[str, Any]) -> str:
    return json.dumps({"Version": "2012-10-17", "Statement": [{"Resource": resource, **s} for s in statements]})


def _allow(principal: Any, action: Any = "bedrock-agentcore:InvokeAgentRuntime", **extra: Any) -> dict[str, Any]:
    return {"Effect": "Allow", "Principal": {"AWS": principal}, "Action": action, **extra}


def _call(data: Any, runtime: dict[str, Any], payload: dict[str, Any], session: str | None = None) -> dict[str, Any]:
    answer = data.invoke_agent_runtime(
        agentRuntimeArn=runtime["agentRuntimeArn"],
        runtimeSessionId=session or new_session_id(),
        payload=json.dumps(payload),
    )
    result: dict[str, Any] = json.loads(answer["response"].read())
    return result


@pytest.fixture
def policy(control: Any, callee: dict[str, Any]) -> Iterator[Any]:
    """Put a policy on the callee for one test; removed afterwards."""
    arn = callee["agentRuntimeArn"]

    def put(*statements: dict[str, Any]) -> None:
        control.put_resource_policy(resourceArn=arn, policy=_policy(arn, *statements))

    yield put
    try:
        control.delete_resource_policy(resourceArn=arn)
    except ClientError as exc:
        assert exc.response["Error"]["Code"] == "ResourceNotFoundException"


def _message(data: Any, runtime: dict[str, Any], target: dict[str, Any]) -> dict[str, Any]:
    return _call(data, runtime, {"op": "invoke", "arn": target["agentRuntimeArn"], "payload": {}})


# -- the control API -----------------------------------------------------------------------------------------------


def test_put_get_delete_round_trip(control: Any, callee: dict[str, Any]) -> None:
    arn = callee["agentRuntimeArn"]
    with pytest.raises(ClientError) as missing:
        control.get_resource_policy(resourceArn=arn)
    assert missing.value.response["Error"]["Code"] == "ResourceNotFoundException"
    text = _policy(arn, _allow([CALLER_ROLE, "123456789012"], ["bedrock-agentcore:*"], Sid="Callers"))
    put = control.put_resource_policy(resourceArn=arn, policy=text)
    assert put["policy"] == text and put["ResponseMetadata"]["HTTPStatusCode"] == 201
    assert control.get_resource_policy(resourceArn=arn)["policy"] == text
    control.delete_resource_policy(resourceArn=arn)
    with pytest.raises(ClientError) as gone:
        control.delete_resource_policy(resourceArn=arn)
    assert gone.value.response["Error"]["Code"] == "ResourceNotFoundException"


def test_endpoint_policy_and_unknown_resources(control: Any, callee: dict[str, Any]) -> None:
    endpoint_arn = f"{callee['agentRuntimeArn']}/runtime-endpoint/DEFAULT"
    control.put_resource_policy(resourceArn=endpoint_arn, policy=_policy(endpoint_arn, _allow("*")))
    assert json.loads(control.get_resource_policy(resourceArn=endpoint_arn)["policy"])["Statement"][0]["Effect"]
    control.delete_resource_policy(resourceArn=endpoint_arn)
    for arn in (
        callee["agentRuntimeArn"].replace(callee["agentRuntimeId"], "nothere-AAAAAAAAAA"),
        callee["agentRuntimeArn"].replace("123456789012", "999999999999"),
    ):
        with pytest.raises(ClientError) as exc:
            control.put_resource_policy(resourceArn=arn, policy=_policy(arn, _allow("*")))
        assert exc.value.response["Error"]["Code"] == "ResourceNotFoundException"


@pytest.mark.parametrize(
    ("statement", "says"),
    [
        (_allow("arn:aws:iam::*:role/caller-agent"), "wildcard may only be the whole value"),
        (_allow("arn:aws:iam::123456789012:role/*"), "wildcard may only be the whole value"),
        (_allow(CALLER_ROLE, "bedrock-agentcore:Invoke*"), "is not supported"),
        (_allow(CALLER_ROLE, "bedrock-agentcore:DeleteAgentRuntime"), "is not supported"),
        (_allow(CALLER_ROLE, "*"), "is not supported"),
        (_allow(CALLER_ROLE, Condition={"StringEquals": {"aws:SourceAccount": "123456789012"}}), "Condition"),
        ({"Effect": "Allow", "Principal": {"AWS": CALLER_ROLE}, "NotAction": "x"}, "NotAction"),
        ({"Effect": "Allow", "Principal": {"Service": "lambda.amazonaws.com"}, "Action": "x"}, "Principal"),
        ({"Effect": "Permit", "Principal": "*", "Action": "bedrock-agentcore:*"}, "Effect"),
        (_allow("not-an-arn"), "is not an account id"),
    ],
)
def test_policies_hangar_cannot_evaluate_exactly_are_refused(
    control: Any, callee: dict[str, Any], statement: dict[str, Any], says: str
) -> None:
    arn = callee["agentRuntimeArn"]
    with pytest.raises(ClientError) as exc:
        control.put_resource_policy(resourceArn=arn, policy=_policy(arn, statement))
    assert exc.value.response["Error"]["Code"] == "ValidationException"
    assert says in exc.value.response["Error"]["Message"]


def test_resource_wildcards_oversize_and_garbage_are_refused(control: Any, callee: dict[str, Any]) -> None:
    arn = callee["agentRuntimeArn"]
    bad = [
        _policy(arn.replace(callee["agentRuntimeId"], "*"), _allow("*")),  # a Resource wildcard inside the ARN
        _policy(callee["agentRuntimeArn"] + "-other", _allow("*")),  # another resource
        json.dumps(
            {"Version": "2012-10-17", "Statement": [_allow("*", Resource=arn, Sid=f"S{i}") for i in range(200)]}
        ),
        "{not json",
        json.dumps({"Version": "2012-10-17", "Statement": []}),
        json.dumps({"Statement": [_allow("*", Resource=arn)]}),  # no Version
    ]
    assert len(bad[2]) > 20480
    for text in bad:
        with pytest.raises(ClientError) as exc:
            control.put_resource_policy(resourceArn=arn, policy=text)
        assert exc.value.response["Error"]["Code"] == "ValidationException", text[:80]


# -- calls from a session -------------------------------------------------------------------------------------------


def test_denied_without_a_policy(data: Any, caller: dict[str, Any], callee: dict[str, Any]) -> None:
    found = _message(data, caller, callee)
    assert found["error"] == "AccessDeniedException"
    assert CALLER_ROLE in found["message"] and "no resource-based policy allows" in found["message"]


def test_allowed_by_a_policy_naming_the_callers_role(
    data: Any, caller: dict[str, Any], callee: dict[str, Any], stranger: dict[str, Any], policy: Any
) -> None:
    policy(_allow(CALLER_ROLE, ["bedrock-agentcore:InvokeAgentRuntime", "bedrock-agentcore:GetAgentCard"]))
    found = _call(data, caller, {"op": "a2a", "arn": callee["agentRuntimeArn"], "text": "from another agent"})
    assert found.get("card") and found["texts"] and found["texts"][0].startswith("seen"), found
    other = _message(data, stranger, callee)  # a third runtime the policy does not name
    assert other["error"] == "AccessDeniedException", other


def test_boto3_invoke_is_streamed_through(
    data: Any, caller: dict[str, Any], callee: dict[str, Any], policy: Any
) -> None:
    """The callee answers JSON-RPC over InvokeAgentRuntime: boto3 in the caller reads the body the callee sent."""
    policy(_allow(CALLER_ROLE))
    rpc = {
        "jsonrpc": "2.0",
        "id": 1,
        "method": "SendMessage",
        "params": {"message": {"role": "ROLE_USER", "parts": [{"text": "hi"}], "messageId": str(uuid.uuid4())}},
    }
    request = {"op": "invoke", "arn": callee["agentRuntimeArn"], "payload": rpc, "headers": {"A2A-Version": "1.0"}}
    found = _call(data, caller, request)
    assert found["answer"]["id"] == 1 and "seen" in json.dumps(found["answer"]), found


def test_answers_stream_through_the_channel_unbuffered(control: Any, data: Any, caller: dict[str, Any]) -> None:
    """The callee streams one event, then waits until the caller, having read it, releases the rest: this completes
    only if every hop (the channel, the data plane, the callee's answer) passes the event on while still open."""
    arn = caller["agentRuntimeArn"]
    control.put_resource_policy(resourceArn=arn, policy=_policy(arn, _allow(CALLER_ROLE)))
    try:
        found = _call(data, caller, {"op": "relay", "arn": arn, "session": new_session_id()})
    finally:
        control.delete_resource_policy(resourceArn=arn)
    assert found["content_type"].startswith("text/event-stream"), found
    assert [json.loads(line.removeprefix("data:"))["part"] for line in found["lines"]] == ["first", "second"], found


def test_the_endpoints_policy_counts_too(
    control: Any, data: Any, caller: dict[str, Any], callee: dict[str, Any], policy: Any
) -> None:
    """The runtime's and the qualifier's endpoint's (DEFAULT) policies are read together: either may allow, a Deny
    in either wins."""
    endpoint = f"{callee['agentRuntimeArn']}/runtime-endpoint/DEFAULT"
    rpc = {"jsonrpc": "2.0", "id": 4, "method": "GetTask", "params": {"id": "none"}}
    ask = {"op": "invoke", "arn": callee["agentRuntimeArn"], "payload": rpc}
    control.put_resource_policy(resourceArn=endpoint, policy=_policy(endpoint, _allow(CALLER_ROLE)))
    try:
        assert "answer" in _call(data, caller, ask)
        deny = {"Effect": "Deny", "Principal": {"AWS": CALLER_ROLE}, "Action": "bedrock-agentcore:InvokeAgentRuntime"}
        control.put_resource_policy(resourceArn=endpoint, policy=_policy(endpoint, deny))
        policy(_allow(CALLER_ROLE))  # the runtime allows, the endpoint denies
        refused = _call(data, caller, ask)
        assert refused["error"] == "AccessDeniedException" and "explicit deny" in refused["message"], refused
    finally:
        control.delete_resource_policy(resourceArn=endpoint)


def test_explicit_deny_wins(data: Any, caller: dict[str, Any], callee: dict[str, Any], policy: Any) -> None:
    policy(_allow("*"), {"Effect": "Deny", "Principal": {"AWS": CALLER_ROLE}, "Action": "bedrock-agentcore:*"})
    found = _message(data, caller, callee)
    assert found["error"] == "AccessDeniedException" and "explicit deny" in found["message"], found


def test_workload_identity_arn_is_a_principal_too(
    data: Any, caller: dict[str, Any], callee: dict[str, Any], policy: Any
) -> None:
    workload = (
        f"arn:aws:bedrock-agentcore:us-west-2:123456789012:workload-identity-directory/default/"
        f"workload-identity/{caller['agentRuntimeId']}"
    )
    policy(_allow(workload))
    found = _call(data, caller, {"op": "a2a", "arn": callee["agentRuntimeArn"]})
    assert found["error"], found  # the card is GetAgentCard: not allowed by an InvokeAgentRuntime-only policy
    rpc = {"jsonrpc": "2.0", "id": 2, "method": "GetTask", "params": {"id": "none"}}
    answer = _call(data, caller, {"op": "invoke", "arn": callee["agentRuntimeArn"], "payload": rpc})
    assert "answer" in answer, answer


def test_a_call_back_into_the_calling_session_is_refused(control: Any, data: Any, caller: dict[str, Any]) -> None:
    arn = caller["agentRuntimeArn"]
    control.put_resource_policy(resourceArn=arn, policy=_policy(arn, _allow(CALLER_ROLE)))
    try:
        session = new_session_id()
        loop = _call(
            data, caller, {"op": "invoke", "arn": arn, "session": session, "payload": {"op": "whoami"}}, session
        )
        assert loop["error"] == "ValidationException" and "loop" in loop["message"], loop
        other = _call(data, caller, {"op": "invoke", "arn": arn, "payload": {"op": "whoami"}}, session)
        assert other["answer"]["session"] != session  # its own runtime, another session: the policy decides
    finally:
        control.delete_resource_policy(resourceArn=arn)


# -- hostile ------------------------------------------------------------------------------------------------------


def test_forged_or_foreign_credentials_are_refused(
    hangar: HangarServer, data: Any, caller: dict[str, Any], callee: dict[str, Any], policy: Any
) -> None:
    policy(_allow("*"))  # anyone: what is left to refuse is who the request says it is
    path = f"/runtimes/{quote(callee['agentRuntimeArn'], safe='')}/invocations"
    admin_id, _ = read_admin_key(hangar.credentials_file)
    forged = [
        {},  # nothing at all
        {  # another principal's access key, a made-up signature, forged identity headers
            "Authorization": f"AWS4-HMAC-SHA256 Credential={admin_id}/20261207/us-west-2/bedrock-agentcore/aws4_request"
            ", SignedHeaders=host;x-amz-date, Signature=" + "0" * 64,
            "X-Amz-Date": "20261207T000000Z",
        },
        {"WorkloadAccessToken": "forged", "X-Amzn-Bedrock-AgentCore-Runtime-User-Id": "someone-else"},
        {"Authorization": "Bearer not-a-jwt"},  # the callee takes SigV4 only
    ]
    for headers in forged:
        found = _call(data, caller, {"op": "raw", "path": path, "headers": headers, "body": "{}"})
        assert found["status"] in (401, 403), (headers, found)
        assert found["type"] in (
            "AccessDeniedException",
            "MissingAuthenticationTokenException",
            "UnauthorizedException",
            "InvalidSignatureException",
            "UnrecognizedClientException",
        )


def test_another_sessions_credentials_are_refused(
    data: Any, caller: dict[str, Any], stranger: dict[str, Any], callee: dict[str, Any], policy: Any
) -> None:
    policy(_allow("*"))
    stolen = _call(data, caller, {"op": "credentials"})
    found = _call(data, stranger, {"op": "invoke", "arn": callee["agentRuntimeArn"], "credentials": stolen})
    assert found["error"] == "AccessDeniedException" and "another session" in found["message"], found
    rpc = {"jsonrpc": "2.0", "id": 3, "method": "GetTask", "params": {"id": "none"}}
    own = _call(data, stranger, {"op": "invoke", "arn": callee["agentRuntimeArn"], "payload": rpc})
    assert "answer" in own, own  # its own keys, the same policy: allowed


def test_admin_calls_on_the_main_port_are_unaffected(data: Any, callee: dict[str, Any], policy: Any) -> None:
    policy({"Effect": "Deny", "Principal": "*", "Action": "bedrock-agentcore:*"})
    card = data.get_agent_card(agentRuntimeArn=callee["agentRuntimeArn"], runtimeSessionId=new_session_id())
    assert card["agentCard"]["name"]


# -- the OAuth path: a bearer token from GetResourceOauth2Token (M2M), checked by the target's authorizer ----------


@pytest.fixture(scope="module")
def idp(hangar: HangarServer) -> Iterator[RunningIdp]:
    running = start_panva(hangar.data_dir.parent / "idp")
    yield running
    running.stop()


def test_bearer_from_m2m_reaches_a_jwt_runtime(
    control: Any, data: Any, caller: dict[str, Any], idp: RunningIdp
) -> None:
    provider = f"callee-idp-{uuid.uuid4().hex[:8]}"
    control.create_oauth2_credential_provider(
        name=provider,
        credentialProviderVendor="CustomOauth2",
        oauth2ProviderConfigInput={
            "customOauth2ProviderConfig": {
                "oauthDiscovery": {"discoveryUrl": idp.discovery_url},
                "clientId": "agent-client",
                "clientSecret": idp.clients["agent-client"],
            }
        },
    )
    guarded = _deploy(
        control,
        "agentcorea2a",
        OTHER_ROLE,
        protocolConfiguration=A2A,
        authorizerConfiguration={"customJWTAuthorizer": rules_for(idp)},
    )
    rpc = {
        "jsonrpc": "2.0",
        "id": 7,
        "method": "SendMessage",
        "params": {"message": {"role": "ROLE_USER", "parts": [{"text": "hi"}], "messageId": str(uuid.uuid4())}},
    }
    ask = {"op": "bearer", "arn": guarded["agentRuntimeArn"], "provider": provider, "rpc": rpc}
    found = _call(data, caller, {**ask, "scopes": ["agent:invoke"]})
    assert found["card"] == 200 and found["status"] == 200 and "seen" in found["body"], found
    weak = _call(data, caller, {**ask, "scopes": ["reports:read"]})  # a token without the scope the runtime wants
    assert weak["status"] in (401, 403), weak
    signed_call = _message(data, caller, guarded)  # SigV4 to a runtime that takes bearer tokens only
    assert signed_call["error"] == "AccessDeniedException" and "bearer" in signed_call["message"], signed_call


def test_cli_puts_gets_and_deletes_a_policy(hangar: HangarServer, callee: dict[str, Any], tmp_path: Path) -> None:
    arn = callee["agentRuntimeArn"]
    document = tmp_path / "policy.json"
    document.write_text(_policy(arn, _allow(CALLER_ROLE)))
    env = {key: value for key, value in os.environ.items() if not key.startswith(("AWS_", "HANGAR_"))}
    env.update(HANGAR_ENDPOINT_URL=hangar.url, HANGAR_DATA_DIR=str(hangar.data_dir))

    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [str(HANGAR_BIN), "policies", *args], env=env, capture_output=True, text=True, timeout=120
        )

    name = callee["agentRuntimeName"]
    assert cli("put", name, str(document)).stdout.strip() == arn
    shown = cli("get", name)
    assert shown.returncode == 0 and json.loads(shown.stdout)["Statement"][0]["Principal"]["AWS"] == CALLER_ROLE
    assert cli("delete", name).returncode == 0
    missing = cli("get", name)
    assert missing.returncode == 3 and "ResourceNotFoundException" in missing.stderr
    document.write_text(_policy(arn, _allow(CALLER_ROLE, Condition={"Bool": {"aws:SecureTransport": "true"}})))
    refused = cli("put", name, str(document))
    assert refused.returncode == 1 and "Condition" in refused.stderr
