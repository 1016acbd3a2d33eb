"""Property-based fuzzing of every operation Hangar serves, generated from botocore's service models.

Each case is a model-shaped request, often made hostile (tests/fuzz/strategies.py), signed with the admin key by
botocore's signer so it reaches the handlers (a slice goes unsigned or badly signed), and sent with raw httpx to a
real ``hangar serve``. Every answer must be a 2xx or an AWS-shaped 4xx: never a 5xx. Afterwards the server must
be healthy and its state readable by boto3.

``HANGAR_FUZZ_SEED`` (default fixed) makes a run reproducible; ``HANGAR_FUZZ_EXAMPLES`` sets cases per operation.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass, replace
from urllib.parse import quote

import httpx
import pytest
from hypothesis import HealthCheck, Phase, example, given, seed, settings
from hypothesis import strategies as st

from tests.dataplane.support import deploy, seeded_server
from tests.fuzz import wire as fuzz_wire
from tests.fuzz.strategies import Seeds, WireRequest, wire_requests
from tests.fuzz.wire import SIGNINGS, Operation, prepare, served_operations, shape_problem
from tests.support.server import HangarServer, read_admin_key

SEED = int(os.environ.get("HANGAR_FUZZ_SEED", "20261207"))
EXAMPLES = int(os.environ.get("HANGAR_FUZZ_EXAMPLES", "20"))
OPERATIONS = served_operations()
ACCOUNT = "123456789012"
SESSION_HEADER = "X-Amzn-Bedrock-AgentCore-Runtime-Session-Id"

# Requests that once answered 5xx, replayed first on every run (operation name → (request, signing)).
REGRESSIONS: dict[str, list[tuple[WireRequest, str]]] = {
    # A lone surrogate echoed in a ValidationException message could not be encoded as UTF-8 (gateway/errors.py).
    "UpdateAgentRuntime": [
        (
            WireRequest(
                method="PUT",
                path="/runtimes/A/",
                headers=(("Content-Type", "application/json"),),
                body=b'{"agentRuntimeArtifact": {"containerConfiguration": {"containerUri": "0"}}, "roleArn": "0", '
                b'"networkConfiguration": {"networkMode": "\\ud800"}}',
            ),
            "admin",
        )
    ],
    # A POST on an object without '?uploads' or '?uploadId=' answered 501 NotImplemented (now S3's 405).
    "CompleteMultipartUpload": [(WireRequest(method="POST", path="/fuzz-seed/%F3%A4%A1%B8v"), "admin")],
    # JSON nested deeper than the parser's stack: RecursionError escaped the data plane's body reader.
    "StopRuntimeSession": [
        (
            WireRequest(
                method="POST",
                path="/runtimes/x/stopruntimesession",
                headers=((SESSION_HEADER, "fuzz-session-" + "c" * 30),),
                body=b'{"a":' * 5000 + b"1" + b"}" * 5000,
            ),
            "admin",
        )
    ],
    # The same on ECR's JSON 1.1 API (gateway/ecr.py).
    "DeleteRepository": [
        (
            WireRequest(
                method="POST",
                path="/",
                headers=(
                    ("X-Amz-Target", "AmazonEC2ContainerRegistry_V20150921.DeleteRepository"),
                    ("Content-Type", "application/x-amz-json-1.1"),
                ),
                body=b"[" * 100_000 + b"]" * 100_000,
            ),
            "admin",
        ),
        # A lone surrogate in a name reached SQLite, which cannot encode it (gateway/ecr.py).
        (
            WireRequest(
                method="POST",
                path="/",
                headers=(
                    ("X-Amz-Target", "AmazonEC2ContainerRegistry_V20150921.DeleteRepository"),
                    ("Content-Type", "application/x-amz-json-1.1"),
                ),
                body=b'{"repositoryName": "x\\udfffy"}',
            ),
            "admin",
        ),
    ],
    # A non-ASCII nextToken reached hmac.compare_digest, which refuses non-ASCII str (domain/pagination.py).
    "ListAgentRuntimes": [
        (
            WireRequest(method="POST", path="/runtimes/", query="nextToken=%F1%98%93%B3%C3%93W%C2%8E.%F3%8F%B3%8E"),
            "admin",
        )
    ],
    # A command with NUL or a lone surrogate could never be run: the sandbox's exec stream never ended (a hang).
    "InvokeAgentRuntimeCommand": [
        (
            WireRequest(
                method="POST",
                path="/runtimes/{ready}/commands",
                headers=(("Content-Type", "application/json"), (SESSION_HEADER, "fuzz-session-" + "a" * 30)),
                body=body,
            ),
            "admin",
        )
        for body in (b'{"command": "x\\ud800"}', b'{"command": "echo \\u0000hi"}')
    ],
    # A lone surrogate in a workload access token reached pyjwt, which raised UnicodeEncodeError (identity/tokens.py).
    "GetResourceApiKey": [
        (
            WireRequest(
                method="POST",
                path="/identities/api-key",
                headers=(("Content-Type", "application/json"),),
                body=b'{"workloadIdentityToken": "\\ud800", "resourceCredentialProviderName": "0"}',
            ),
            "admin",
        )
    ],
    "GetResourceOauth2Token": [
        (
            WireRequest(
                method="POST",
                path="/identities/oauth2/token",
                headers=(("Content-Type", "application/json"),),
                body=b'{"workloadIdentityToken": "\\ud800", "resourceCredentialProviderName": "Q0", "scopes": [], '
                b'"oauth2Flow": "USER_FEDERATION"}',
            ),
            "admin",
        )
    ],
    # A control character echoed from the bucket name made the S3 error XML unparseable (gateway/artifacts.py).
    "GetObject": [
        (WireRequest(method="GET", path="/%11E%2A3%C3%A1%C2%95%ED%A0%80/agent.zip"), "admin"),
        # An empty key makes it a bucket GET without list-type=2: ListObjects, which answered 501.
        (WireRequest(method="GET", path="/fuzz-seed"), "admin"),
    ],
}


@dataclass
class Target:
    server: HangarServer
    client: httpx.Client
    key: tuple[str, str]
    seeds: Seeds
    ready_arn: str  # the READY runtime: "{ready}" in a regression example's path


@pytest.fixture(scope="module")
def fuzz_server() -> Iterator[HangarServer]:
    with seeded_server("hangar-fuzz-", ["misbehave"]) as server:
        yield server


@pytest.fixture(scope="module")
def target(fuzz_server: HangarServer) -> Iterator[Target]:
    """The server plus real resources, so cases get past "not found" into the handlers' deeper checks: a READY
    runtime whose agent answers (data plane only, so no control-plane case deletes it), two runtimes whose
    build failed (control plane), an S3 object, and two session ids (so a handful of sandboxes serve every case).
    """
    control = fuzz_server.boto3_client("bedrock-agentcore-control")
    s3 = fuzz_server.boto3_client("s3")
    s3.create_bucket(Bucket="fuzz-seed")
    s3.put_object(Bucket="fuzz-seed", Key="agent.zip", Body=b"not really a zip")
    ready = deploy(control, "misbehave")
    runtimes = [
        control.create_agent_runtime(
            agentRuntimeName=f"fuzz_seed_{i}",
            agentRuntimeArtifact={"containerConfiguration": {"containerUri": "127.0.0.1/fuzz:latest"}},
            roleArn=f"arn:aws:iam::{ACCOUNT}:role/fuzz",
            networkConfiguration={"networkMode": "PUBLIC"},
        )
        for i in range(2)
    ]
    ids = tuple(r["agentRuntimeId"] for r in runtimes)
    arns = tuple(r["agentRuntimeArn"] for r in runtimes)
    seeds = Seeds(
        uri_values={
            "agentRuntimeId": ids,
            "agentRuntimeArn": (ready["agentRuntimeArn"], ready["agentRuntimeArn"], arns[0], ids[0]),
            "resourceArn": (*arns, ready["agentRuntimeArn"]),
            "endpointName": ("DEFAULT",),
            "Bucket": ("fuzz-seed",),
            "Key": ("agent.zip", "dir/agent.zip"),
        },
        header_values={SESSION_HEADER: (f"fuzz-session-{'a' * 30}", f"fuzz-session-{'b' * 30}")},
    )
    with httpx.Client(timeout=30) as client:  # a case that hangs fails (ReadTimeout) instead of waiting forever
        yield Target(fuzz_server, client, read_admin_key(fuzz_server.credentials_file), seeds, ready["agentRuntimeArn"])


def test_discovery_finds_the_served_operations() -> None:
    """The walk over the models must find the core of each service, or the fuzzing below would prove nothing."""
    labels = {op.label for op in OPERATIONS}
    for expected in (
        "bedrock-agentcore-control:CreateAgentRuntime",
        "bedrock-agentcore-control:TagResource",
        "bedrock-agentcore-control:ListAgentRuntimeEndpoints",
        "bedrock-agentcore:InvokeAgentRuntime",
        "bedrock-agentcore:StopRuntimeSession",
        "s3:PutObject",
        "s3:CompleteMultipartUpload",
    ):
        assert expected in labels
    assert EXAMPLES * len(OPERATIONS) >= 1000 or EXAMPLES != 20, "the default run must send at least 1,000 cases"


def _signings() -> st.SearchStrategy[str]:
    """Mostly signed with the admin key (to reach the handlers); about one case in six refused at the gate."""
    return st.one_of(st.just("admin"), st.just("admin"), st.just("admin"), st.just("admin"), st.sampled_from(SIGNINGS))


def _send(target: Target, op: Operation, wire: WireRequest, signing: str) -> None:
    request = prepare(wire, target.server.url, op.signing_name, target.key, signing)
    response = target.client.send(request)
    fuzz_wire.tally(op.label, response.status_code)
    problem = shape_problem(op, request, response)
    assert problem is None, (
        f"{op.label} [{wire.mutation}, {signing}] {request.method} {request.url}\n"
        f"headers={wire.headers!r}\nbody={wire.body[:300]!r}\n→ {problem}"
    )


@pytest.mark.parametrize("op", OPERATIONS, ids=lambda op: op.label)
def test_operation_answers_are_aws_shaped(target: Target, op: Operation) -> None:
    """No 5xx and only AWS-shaped errors, whatever the request."""

    @seed(SEED)
    @settings(
        max_examples=EXAMPLES,
        deadline=None,
        database=None,
        suppress_health_check=list(HealthCheck),
        phases=(Phase.explicit, Phase.generate),  # no shrinking: each try is a round trip; the case is printed whole
    )
    @given(wire=wire_requests(op.model, target.seeds), signing=_signings())
    def case(wire: WireRequest, signing: str) -> None:
        _send(target, op, wire, signing)

    for wire, signing in REGRESSIONS.get(op.name, []):
        path = wire.path.replace("{ready}", quote(target.ready_arn, safe=""))
        case = example(wire=replace(wire, path=path), signing=signing)(case)
    case()


def test_a_body_over_the_cap_is_refused(target: Target) -> None:
    """Over the 10 MB cap for signed API bodies: refused with a 400, read no further."""
    op = next(o for o in OPERATIONS if o.name == "CreateAgentRuntime")
    body = b'{"description": "' + b"A" * (11 * 1024 * 1024) + b'"}'
    wire = WireRequest(method="PUT", path="/runtimes/", body=body, headers=(("Content-Type", "application/json"),))
    _send(target, op, wire, "admin")


def test_list_objects_v1_pages_with_markers(target: Target) -> None:
    """A bucket GET without ``list-type=2`` once answered 501 (the fuzzer reached it with an empty GetObject key):
    it is S3's ListObjects, paged by ``marker``."""
    s3 = target.server.boto3_client("s3")
    s3.create_bucket(Bucket="fuzz-v1")
    for key in ("a/1", "a/2", "b", "c"):
        s3.put_object(Bucket="fuzz-v1", Key=key, Body=key.encode())
    first = s3.list_objects(Bucket="fuzz-v1", MaxKeys=2)
    assert [o["Key"] for o in first["Contents"]] == ["a/1", "a/2"]
    assert first["IsTruncated"] is True and first["NextMarker"] == "a/2"
    rest = s3.list_objects(Bucket="fuzz-v1", Marker=first["NextMarker"])
    assert [o["Key"] for o in rest["Contents"]] == ["b", "c"] and rest["IsTruncated"] is False
    rolled = s3.list_objects(Bucket="fuzz-v1", Delimiter="/")
    assert [p["Prefix"] for p in rolled["CommonPrefixes"]] == ["a/"]
    assert [o["Key"] for o in rolled["Contents"]] == ["b", "c"]


def test_server_is_healthy_and_state_consistent_after_fuzzing(target: Target) -> None:
    """Whatever the fuzzing did, the server answers and every runtime it lists reads back whole through boto3."""
    assert target.client.get(f"{target.server.url}/healthz").status_code == 200
    control = target.server.boto3_client("bedrock-agentcore-control")
    statuses = control.meta.service_model.shape_for("AgentRuntimeStatus").enum
    listed = [
        runtime for page in control.get_paginator("list_agent_runtimes").paginate() for runtime in page["agentRuntimes"]
    ]
    assert len(listed) >= 1
    for runtime in listed:
        assert runtime["status"] in statuses
        got = control.get_agent_runtime(agentRuntimeId=runtime["agentRuntimeId"])
        assert got["agentRuntimeArn"] == runtime["agentRuntimeArn"]
        assert got["agentRuntimeName"] == runtime["agentRuntimeName"]
    s3 = target.server.boto3_client("s3")
    assert s3.list_objects_v2(Bucket="fuzz-seed")["Name"] == "fuzz-seed"
    assert "Traceback" not in target.server.log(), "a handler raised: see the server log"
    if len(fuzz_wire.COUNTS) == len(OPERATIONS) and EXAMPLES == 20:  # the whole default run happened
        assert sum(sum(c.values()) for c in fuzz_wire.COUNTS.values()) >= 1000
