"""Domain rules that need no server: tokens, messages, references (fast, pure functions)."""

from __future__ import annotations

import pytest

from hangar.control.commands import parse_create_runtime, request_hash
from hangar.domain.errors import ValidationError
from hangar.domain.pagination import decode_token, encode_token
from hangar.domain.runtime import OCI_REFERENCE, parse_runtime_spec
from hangar.domain.validation import Checker

BASE = {
    "agentRuntimeName": "agent",
    "agentRuntimeArtifact": {"containerConfiguration": {"containerUri": "repo/agent:1"}},
    "roleArn": "arn:aws:iam::123456789012:role/r",
}


def test_tokens_round_trip_and_refuse_tampering() -> None:
    token = encode_token(b"k" * 32, "runtimes", "agent-abcdefghij")
    assert decode_token(b"k" * 32, "runtimes", token) == "agent-abcdefghij"
    for bad_secret, scope, text in [
        (b"x" * 32, "runtimes", token),  # another installation
        (b"k" * 32, "versions:agent-abcdefghij", token),  # another listing
        (b"k" * 32, "runtimes", token.replace(".", ".A", 1)),
        (b"k" * 32, "runtimes", "e30." + token.split(".")[1]),
    ]:
        with pytest.raises(ValidationError):
            decode_token(bad_secret, scope, text)


@pytest.mark.parametrize(
    "reference",
    [
        "python",
        "docker.io/library/python:3.12-slim",
        "123456789012.dkr.ecr.us-west-2.amazonaws.com/agents/echo:v1",
        "localhost:5000/team/agent@sha256:" + "0" * 64,
        "ghcr.io/org/my_agent__x-y.z:latest",
    ],
)
def test_oci_references_accepted(reference: str) -> None:
    check = Checker()
    spec = parse_runtime_spec(
        {**BASE, "agentRuntimeArtifact": {"containerConfiguration": {"containerUri": reference}}}, check
    )
    assert spec is not None and spec.container_uri == reference and not check.problems


@pytest.mark.parametrize(
    "reference", ["UPPER/case", "Registry/Repo", "a b", "repo:tag:tag", "repo@sha256:short", "/leading", "x/"]
)
def test_oci_references_refused(reference: str) -> None:
    import re

    assert re.fullmatch(OCI_REFERENCE, reference) is None


def test_every_problem_is_reported_at_once() -> None:
    with pytest.raises(ValidationError) as excinfo:
        parse_create_runtime(
            {**BASE, "agentRuntimeName": "my-agent", "roleArn": "nope", "lifecycleConfiguration": {"maxLifetime": 30}}
        )
    error = excinfo.value
    assert error.message.startswith("3 validation errors detected: Value 'my-agent' at 'agentRuntimeName'")
    assert [f.name for f in error.fields] == ["agentRuntimeName", "roleArn", "lifecycleConfiguration.maxLifetime"]


def test_lifecycle_goes_up_to_14_days_for_every_runtime() -> None:
    long = {"lifecycleConfiguration": {"idleRuntimeSessionTimeout": 86400, "maxLifetime": 1209600}}
    command = parse_create_runtime({**BASE, **long})
    assert command.spec.lifecycle == {"idleRuntimeSessionTimeout": 86400, "maxLifetime": 1209600}
    with pytest.raises(ValidationError):
        parse_create_runtime({**BASE, "lifecycleConfiguration": {"maxLifetime": 1209601}})


def test_request_hash_ignores_the_client_token_only() -> None:
    one = parse_create_runtime({**BASE, "clientToken": "a" * 36})
    two = parse_create_runtime({**BASE, "clientToken": "b" * 36})
    three = parse_create_runtime({**BASE, "description": "other"})
    assert request_hash(one) == request_hash(two) != request_hash(three)
