"""Which model operations Hangar serves, how a fuzz case is signed and sent, and what every answer must look like.

Served operations are found, not listed: every operation of ``bedrock-agentcore-control`` and
``bedrock-agentcore`` whose (method, requestUri) matches a route in the server's own route table is fuzzed, so a
new route is fuzzed the day it is added. S3 is the exception: its path-style routes match almost any S3
operation, so the subset the artifact store implements is named in ``S3_SERVED``. ECR's JSON 1.1 API is one route
(``POST /`` + ``X-Amz-Target``) whose module lists the operations it dispatches; those are fuzzed.
"""

from __future__ import annotations

import json
import re
import sys
import xml.etree.ElementTree as ET
from dataclasses import dataclass

import botocore.session
import httpx
from botocore.auth import S3SigV4Auth, SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials
from botocore.model import OperationModel

from hangar.gateway.app import collect_routes
from hangar.gateway.routing import Route
from tests.fuzz.strategies import WireRequest

REGION = "us-west-2"
AGENTCORE_SERVICES = ("bedrock-agentcore-control", "bedrock-agentcore")
# What gateway/artifacts.py implements (its module docstring); every other S3 operation answers NotImplemented.
S3_SERVED = (
    "CreateBucket",
    "HeadBucket",
    "ListObjects",
    "ListObjectsV2",
    "PutObject",
    "GetObject",
    "HeadObject",
    "DeleteObject",
    "CreateMultipartUpload",
    "UploadPart",
    "CompleteMultipartUpload",
    "AbortMultipartUpload",
)
_PARAM = re.compile(r"\{[^}]+?(\+?)\}")


@dataclass(frozen=True)
class Operation:
    service: str
    name: str
    model: OperationModel
    signing_name: str

    @property
    def label(self) -> str:
        return f"{self.service}:{self.name}"

    @property
    def s3(self) -> bool:
        return self.service == "s3"


def _shape_of(template: str) -> str:
    """A path template with parameter names erased: ``/runtimes/{agentRuntimeId}/`` → ``/runtimes/{}/``."""
    return _PARAM.sub(lambda m: "{+}" if m.group(1) else "{}", template.split("?", 1)[0])


def served_operations() -> list[Operation]:
    """Every model operation the server routes, in a stable order."""
    session = botocore.session.get_session()
    routes = collect_routes()
    api = {(r.method, _shape_of(r.template)) for r in routes if not r.name.startswith("S3") and r.method != "WEBSOCKET"}
    s3_routes = {(r.method, _shape_of(r.template)) for r in routes if r.name.startswith("S3")}
    found: list[Operation] = []
    for service in (*AGENTCORE_SERVICES, "s3"):
        model = session.get_service_model(service)
        signing = model.metadata.get("signingName", model.endpoint_prefix)
        for name in model.operation_names:
            op = model.operation_model(name)
            method = op.http["method"]
            key = (method, _shape_of(op.http["requestUri"]))
            if service == "s3":
                route_key = ("GET" if method == "HEAD" else method, key[1])
                if name in S3_SERVED and route_key in s3_routes:
                    found.append(Operation(service, name, op, signing))
            elif key in api:
                found.append(Operation(service, name, op, signing))
    return found + _json_protocol_operations(session, routes)


def _json_protocol_operations(session: botocore.session.Session, routes: list[Route]) -> list[Operation]:
    """ECR speaks JSON 1.1 (``POST /`` + ``X-Amz-Target``): one route, whose module lists the operations it
    dispatches in ``OPERATIONS``."""
    found: list[Operation] = []
    for route in routes:
        if route.name != "EcrJsonProtocol":
            continue
        served = getattr(sys.modules[route.handler.__module__], "OPERATIONS", {})
        model = session.get_service_model("ecr")
        signing = model.metadata.get("signingName", model.endpoint_prefix)
        found += [Operation("ecr", name, model.operation_model(name), signing) for name in sorted(served)]
        # CloudWatch Logs shares that route (gateway/logs_api.py): its operations are fuzzed the same way.
        logs_served = getattr(sys.modules["hangar.gateway.logs_api"], "OPERATIONS", {})
        logs_model = session.get_service_model("logs")
        logs_signing = logs_model.metadata.get("signingName", logs_model.endpoint_prefix)
        found += [Operation("logs", n, logs_model.operation_model(n), logs_signing) for n in sorted(logs_served)]
    return found


# -- signing and sending -----------------------------------------------------------------------------------

SIGNINGS = ("admin", "unsigned", "wrong_secret", "unknown_key", "garbage_authorization", "old_date", "other_region")


def prepare(
    wire: WireRequest, base_url: str, signing_name: str, key: tuple[str, str], signing: str = "admin"
) -> httpx.Request:
    """The httpx request for ``wire``, signed as ``signing`` says with botocore's own signer.

    httpx normalizes a URL (dot segments, stray characters) before sending it, so the URL is normalized first and
    the signature is computed over exactly what goes on the wire.
    """
    url = httpx.URL(base_url + wire.path + (f"?{wire.query}" if wire.query else ""))
    sent_url = url.scheme + "://" + url.netloc.decode("ascii") + url.raw_path.decode("ascii")
    headers = list(wire.headers)
    if signing != "unsigned" and signing != "garbage_authorization":
        key_id, secret = key
        region = REGION
        if signing == "wrong_secret":
            secret = secret[::-1] + "x"
        elif signing == "unknown_key":
            key_id = "AKIA" + "Z" * 16
        elif signing == "other_region":
            region = "eu-north-9"
        aws = AWSRequest(method=wire.method, url=sent_url, headers=dict(headers), data=wire.body)
        signer = S3SigV4Auth if signing_name == "s3" else SigV4Auth
        signer(Credentials(key_id, secret), signing_name, region).add_auth(aws)
        if signing == "old_date":  # a replayed request: the signature is over another time
            aws.headers.replace_header("X-Amz-Date", "20200101T000000Z")
        headers = list(aws.headers.items())
    elif signing == "garbage_authorization":
        headers.append(("Authorization", "AWS4-HMAC-SHA256 Credential=\u00e9/;;, SignedHeaders=, Signature=zz"))
    encoded = [(k.encode("latin-1", "replace"), v.encode("utf-8", "surrogatepass")) for k, v in headers]
    return httpx.Request(wire.method, url, headers=encoded, content=wire.body)


# -- what every answer must look like ----------------------------------------------------------------------


def shape_problem(op: Operation, request: httpx.Request, response: httpx.Response) -> str | None:
    """Why ``response`` breaks the contract, or None: no 5xx, and every error AWS-shaped (JSON, or S3's XML)."""
    status = response.status_code
    if status == 501 and op.s3 and _s3_code(response) == "NotImplemented":
        # S3's own answer to an operation it does not offer: a hostile variant of a served operation can be another
        # S3 operation (an empty bucket turns AbortMultipartUpload into DeleteBucket), which Hangar does not offer.
        return _s3_problem(request, response)
    if status >= 500:
        return f"{status} server error: {response.text[:500]}"
    if status < 400:
        if status >= 300:
            return f"unexpected redirect-class status {status}"
        return None
    content_type = response.headers.get("content-type", "")
    if op.s3 and (content_type.startswith("application/xml") or request.method == "HEAD"):
        return _s3_problem(request, response)
    error_type = response.headers.get("x-amzn-ErrorType")
    if not error_type:
        return f"{status} without x-amzn-ErrorType: {response.text[:300]}"
    try:
        body = json.loads(response.content)
    except ValueError:
        return f"{status} {error_type} with a body that is not JSON: {response.text[:300]}"
    if not isinstance(body, dict) or not isinstance(body.get("message", body.get("Message")), str):
        return f"{status} {error_type} without a string 'message': {response.text[:300]}"
    return None


def _s3_code(response: httpx.Response) -> str | None:
    try:
        return ET.fromstring(response.content).findtext("Code")
    except ET.ParseError:
        return None


def _s3_problem(request: httpx.Request, response: httpx.Response) -> str | None:
    if request.method == "HEAD":
        return None if not response.content else "an S3 HEAD error with a body"
    try:
        root = ET.fromstring(response.content)
    except ET.ParseError:
        return f"S3 error that is not XML: {response.text[:300]}"
    if root.tag != "Error" or not root.findtext("Code") or root.find("Message") is None:
        return f"S3 error without <Error><Code><Message>: {response.text[:300]}"
    return None


# -- counting ----------------------------------------------------------------------------------------------

COUNTS: dict[str, dict[str, int]] = {}


def tally(label: str, status: int) -> None:
    """One more case of ``label`` answered ``status`` (kept per status class for the run's summary)."""
    per_op = COUNTS.setdefault(label, {})
    klass = "501 NotImplemented" if status == 501 else f"{status // 100}xx"
    per_op[klass] = per_op.get(klass, 0) + 1


def summary_lines() -> list[str]:
    total = sum(sum(c.values()) for c in COUNTS.values())
    lines = [f"API fuzz: {total} requests over {len(COUNTS)} operations"]
    for label in sorted(COUNTS):
        classes = ", ".join(f"{k} {v}" for k, v in sorted(COUNTS[label].items()))
        lines.append(f"  {label:<58} {sum(COUNTS[label].values()):>5}  ({classes})")
    return lines
