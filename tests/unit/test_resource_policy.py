"""The policy subset and its evaluation, and the call-chain bookkeeping of agent-to-agent calls (pure parts)."""

from __future__ import annotations

import itertools
import json
from typing import Any

import pytest

from hangar.domain.errors import ValidationError
from hangar.domain.resource_policy import GET_CARD, INVOKE, Caller, parse_policy
from hangar.gateway.agent_calls import MAX_DEPTH, CallChains

ARN = "arn:aws:bedrock-agentcore:us-west-2:123456789012:runtime/callee-AAAAAAAAAA"
ROLE = "arn:aws:iam::123456789012:role/caller"
ME = Caller("123456789012", frozenset({ROLE}))


def _text(*statements: dict[str, Any]) -> str:
    return json.dumps({"Version": "2012-10-17", "Statement": [{"Resource": ARN, **s} for s in statements]})


def _statement(effect: str, principal: Any, action: Any = "bedrock-agentcore:*") -> dict[str, Any]:
    return {"Effect": effect, "Principal": principal, "Action": action}


def test_allow_deny_and_default() -> None:
    allow = parse_policy(_text(_statement("Allow", {"AWS": ROLE}, INVOKE)), ARN)
    assert allow.decide(ME, INVOKE) == "Allow"
    assert allow.decide(ME, GET_CARD) is None  # another action: no statement speaks of it
    assert allow.decide(Caller("123456789012", frozenset({"arn:aws:iam::123456789012:role/x"})), INVOKE) is None
    both = parse_policy(_text(_statement("Allow", "*"), _statement("Deny", {"AWS": [ROLE]})), ARN)
    assert both.decide(ME, INVOKE) == "Deny"


def test_account_principals_and_action_case() -> None:
    root = parse_policy(
        _text(_statement("Allow", {"AWS": "arn:aws:iam::123456789012:root"}, "BEDROCK-AGENTCORE:getagentcard")), ARN
    )
    assert root.decide(ME, GET_CARD) == "Allow"
    assert root.decide(Caller("999999999999", frozenset()), GET_CARD) is None
    account = parse_policy(_text(_statement("Allow", {"AWS": "123456789012"})), ARN)
    assert account.decide(ME, INVOKE) == "Allow"


@pytest.mark.parametrize(
    "text",
    [
        _text(_statement("Allow", {"AWS": "arn:aws:iam::12345678901?:role/caller"})),
        _text(_statement("Allow", {"AWS": ""})),
        _text(_statement("Allow", {"AWS": []})),
        _text(_statement("Allow", {"AWS": ROLE, "Federated": "x"})),
        _text({**_statement("Allow", "*"), "Sid": "has space"}),
        _text({**_statement("Allow", "*"), "Sid": "A"}, {**_statement("Deny", "*"), "Sid": "A"}),
        json.dumps({"Version": "2012-10-17", "Statement": {**_statement("Allow", "*"), "Resource": ARN + "*"}}),
        json.dumps({"Version": "2012-10-17", "Statement": _statement("Allow", "*")}),  # no Resource
        json.dumps({"Version": "2012-10-17", "Extra": 1, "Statement": [_statement("Allow", "*")]}),
        json.dumps([]),
        "",
    ],
)
def test_refused(text: str) -> None:
    with pytest.raises(ValidationError):
        parse_policy(text, ARN)


def test_chains_refuse_loops_and_depth() -> None:
    chains = CallChains()
    a, b, c = ("ra", "s1"), ("rb", "s2"), ("rc", "s3")
    ab = chains.enter(a, b)
    bc = chains.enter(b, c)
    with pytest.raises(ValidationError, match="loop"):
        chains.enter(c, a)
    with pytest.raises(ValidationError, match="loop"):
        chains.enter(c, c)
    chains.leave(c, bc)
    chains.leave(b, ab)
    assert chains.serving == {}
    assert chains.enter(c, a)  # nothing in flight any more: not a loop
    deep = CallChains()
    hops = [(f"r{i}", f"s{i}") for i in range(MAX_DEPTH + 2)]
    for caller, callee in itertools.pairwise(hops[: MAX_DEPTH + 1]):
        deep.enter(caller, callee)
    with pytest.raises(ValidationError, match="too deep"):
        deep.enter(hops[MAX_DEPTH], hops[MAX_DEPTH + 1])
