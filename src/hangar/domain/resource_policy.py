"""Resource-based policies on runtimes and endpoints: the IAM JSON subset Hangar evaluates, and its evaluation.

A policy says which principals (an execution role ARN, a workload identity ARN, an account, or ``*``) may call
``bedrock-agentcore:InvokeAgentRuntime`` or ``bedrock-agentcore:GetAgentCard`` on the resource it is attached to.
Anything Hangar would not evaluate exactly (``Condition``, ``NotAction``, partial wildcards, other actions) is
refused when the policy is put, never silently ignored when it is used: a policy means what it says or is refused.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, Literal

from hangar.domain.errors import ValidationError

MAX_POLICY_CHARS = 20480  # ResourcePolicyBody max in botocore's bedrock-agentcore-control model
VERSIONS = ("2012-10-17", "2008-10-17")
INVOKE = "bedrock-agentcore:InvokeAgentRuntime"
GET_CARD = "bedrock-agentcore:GetAgentCard"
_ACTIONS = {name.lower(): name for name in (INVOKE, GET_CARD, "bedrock-agentcore:*")}
_UNSUPPORTED = ("NotPrincipal", "NotAction", "NotResource", "Condition")
_SID = re.compile(r"[A-Za-z0-9]*")
_ACCOUNT = re.compile(r"[0-9]{12}")
_IAM_PRINCIPAL = re.compile(r"arn:aws:iam::(?P<account>[0-9]{12}):(?P<kind>root|role/.+|user/.+)")
_WORKLOAD_PRINCIPAL = re.compile(
    r"arn:aws:bedrock-agentcore:[a-z0-9-]+:(?P<account>[0-9]{12}):workload-identity-directory/default/"
    r"workload-identity/[A-Za-z0-9_.-]+"
)
Action = Literal["bedrock-agentcore:InvokeAgentRuntime", "bedrock-agentcore:GetAgentCard"]


@dataclass(frozen=True)
class Statement:
    effect: Literal["Allow", "Deny"]
    principals: frozenset[str]  # "*", 12-digit accounts (a root ARN is stored as its account), or exact ARNs
    actions: frozenset[str]  # canonical spellings from _ACTIONS
    sid: str | None = None

    def applies(self, caller: Caller, action: str) -> bool:
        if action not in self.actions and "bedrock-agentcore:*" not in self.actions:
            return False
        return "*" in self.principals or caller.account_id in self.principals or bool(caller.arns & self.principals)


@dataclass(frozen=True)
class Caller:
    """Who calls, as a policy names it: the account and every ARN that stands for the caller."""

    account_id: str
    arns: frozenset[str]


@dataclass(frozen=True)
class Policy:
    statements: tuple[Statement, ...]

    def decide(self, caller: Caller, action: str) -> Literal["Allow", "Deny"] | None:
        """An explicit Deny wins over any Allow; None when no statement speaks of this caller and action."""
        effects = {statement.effect for statement in self.statements if statement.applies(caller, action)}
        if "Deny" in effects:
            return "Deny"
        return "Allow" if "Allow" in effects else None


def parse_policy(text: str, resource_arn: str) -> Policy:
    """Validate ``text`` as a policy for ``resource_arn``; a ValidationException names the first thing wrong."""
    if not 1 <= len(text) <= MAX_POLICY_CHARS:
        raise _invalid(f"policy must be 1 to {MAX_POLICY_CHARS} characters long (got {len(text)})")
    try:
        document = json.loads(text)
    except (ValueError, RecursionError) as exc:
        raise _invalid("policy is not valid JSON") from exc
    if not isinstance(document, dict):
        raise _invalid("policy must be a JSON object")
    _only(document, {"Version", "Id", "Statement"}, "policy")
    if document.get("Version") not in VERSIONS:
        raise _invalid(f"policy Version must be one of {', '.join(VERSIONS)}")
    if "Id" in document and not isinstance(document["Id"], str):
        raise _invalid("policy Id must be a string")
    raw = document.get("Statement")
    items = [raw] if isinstance(raw, dict) else raw
    if not isinstance(items, list) or not items:
        raise _invalid("policy Statement must be an object or a non-empty list of objects")
    statements = [_statement(item, index, resource_arn) for index, item in enumerate(items)]
    sids = [s.sid for s in statements if s.sid]
    if len(sids) != len(set(sids)):
        raise _invalid("policy Statement Sids must be unique")
    return Policy(tuple(statements))


def _statement(item: object, index: int, resource_arn: str) -> Statement:
    where = f"Statement[{index}]"
    if not isinstance(item, dict):
        raise _invalid(f"{where} must be a JSON object")
    for key in _UNSUPPORTED:
        if key in item:
            raise _invalid(f"{where}.{key} is not supported: Hangar evaluates Effect, Principal, Action and Resource")
    _only(item, {"Sid", "Effect", "Principal", "Action", "Resource"}, where)
    sid = item.get("Sid")
    if sid is not None and (not isinstance(sid, str) or not _SID.fullmatch(sid)):
        raise _invalid(f"{where}.Sid must be a string of letters and digits")
    effect = item.get("Effect")
    if effect not in ("Allow", "Deny"):
        raise _invalid(f"{where}.Effect must be Allow or Deny")
    for key in ("Principal", "Action", "Resource"):
        if key not in item:
            raise _invalid(f"{where}.{key} is required")
    principals = _principals(item["Principal"], where)
    actions = frozenset(_action(value, where) for value in _strings(item["Action"], f"{where}.Action"))
    for value in _strings(item["Resource"], f"{where}.Resource"):
        if value != "*" and value != resource_arn:
            raise _invalid(
                f"{where}.Resource must be the ARN of the resource the policy is attached to ({resource_arn}) or *"
            )
    return Statement(effect, principals, actions, sid or None)


def _principals(value: object, where: str) -> frozenset[str]:
    if value == "*":
        return frozenset({"*"})
    if not isinstance(value, dict) or set(value) != {"AWS"}:
        raise _invalid(f'{where}.Principal must be "*" or {{"AWS": ARN or [ARNs]}} (other principal types are refused)')
    out: set[str] = set()
    for arn in _strings(value["AWS"], f"{where}.Principal.AWS"):
        out.add(_principal(arn, where))
    return frozenset(out)


def _principal(arn: str, where: str) -> str:
    if arn == "*":
        return "*"
    if "*" in arn or "?" in arn:
        raise _invalid(f'{where}.Principal.AWS: a wildcard may only be the whole value "*" (got {arn!r})')
    if _ACCOUNT.fullmatch(arn):
        return arn
    found = _IAM_PRINCIPAL.fullmatch(arn)
    if found is not None:
        return found["account"] if found["kind"] == "root" else arn
    if _WORKLOAD_PRINCIPAL.fullmatch(arn):
        return arn
    raise _invalid(
        f"{where}.Principal.AWS: {arn!r} is not an account id, an IAM role, user or root ARN,"
        " or a workload identity ARN"
    )


def _action(value: str, where: str) -> str:
    canonical = _ACTIONS.get(value.lower())
    if canonical is None:
        raise _invalid(f"{where}.Action {value!r} is not supported: use {', '.join(sorted(_ACTIONS.values()))}")
    return canonical


def _strings(value: object, where: str) -> list[str]:
    items = [value] if isinstance(value, str) else value
    if not isinstance(items, list) or not items or not all(isinstance(item, str) and item for item in items):
        raise _invalid(f"{where} must be a non-empty string or a non-empty list of non-empty strings")
    return list(items)


def _only(document: dict[str, Any], allowed: Iterable[str], where: str) -> None:
    unknown = sorted(set(document) - set(allowed))
    if unknown:
        raise _invalid(f"{where} has unsupported element(s): {', '.join(unknown)}")


def _invalid(message: str) -> ValidationError:
    return ValidationError(message, reason="FieldValidationFailed")
