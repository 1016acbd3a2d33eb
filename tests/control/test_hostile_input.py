"""Hostile and malformed requests, signed like real clients: every answer is an AWS-shaped 4xx, never a 500."""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import quote

import httpx
import pytest

from tests.control.support import ROLE, container_artifact, signed, unique_name
from tests.support.server import HangarServer


def _create_body(**overrides: Any) -> bytes:
    body: dict[str, Any] = {
        "agentRuntimeName": unique_name(),
        "agentRuntimeArtifact": container_artifact(),
        "roleArn": ROLE,
    }
    body.update(overrides)
    return json.dumps(body).encode()


CODE = {
    "code": {"s3": {"bucket": "agents", "prefix": "echo/"}},
    "runtime": "PYTHON_3_11",
    "entryPoint": ["main.py"],
}

BODIES: list[tuple[str, bytes]] = [
    ("empty", b""),
    ("not json", b"{not json"),
    ("truncated", b'{"agentRuntimeName": "x"'),
    ("array", b"[]"),
    ("string", b'"hello"'),
    ("null", b"null"),
    ("invalid utf-8", b'{"agentRuntimeName": "\xff\xfe"}'),
    ("deep nesting", b"[" * 200_000 + b"]" * 200_000),
    ("deep object", b'{"a":' * 50_000 + b"1" + b"}" * 50_000),
    ("name is a number", _create_body(agentRuntimeName=5)),
    ("name is an object", _create_body(agentRuntimeName={"x": 1})),
    ("name unicode", _create_body(agentRuntimeName="агент")),
    ("name emoji", _create_body(agentRuntimeName="agent😀")),
    ("name with NUL", _create_body(agentRuntimeName="a\u0000b")),
    ("name huge", _create_body(agentRuntimeName="a" * 100_000)),
    ("name null", _create_body(agentRuntimeName=None)),
    ("role is bool", _create_body(roleArn=True)),
    ("both artifacts", _create_body(agentRuntimeArtifact={**container_artifact(), "codeConfiguration": CODE})),
    ("no artifact member", _create_body(agentRuntimeArtifact={})),
    ("artifact is a string", _create_body(agentRuntimeArtifact="s3://agents/echo")),
    ("entryPoint is a string", _create_body(agentRuntimeArtifact={"codeConfiguration": {**CODE, "entryPoint": "x"}})),
    (
        "entryPoint escapes",
        _create_body(agentRuntimeArtifact={"codeConfiguration": {**CODE, "entryPoint": ["../x.py"]}}),
    ),
    (
        "entryPoint absolute",
        _create_body(agentRuntimeArtifact={"codeConfiguration": {**CODE, "entryPoint": ["/bin/sh"]}}),
    ),
    (
        "three entry points",
        _create_body(agentRuntimeArtifact={"codeConfiguration": {**CODE, "entryPoint": ["a", "b", "c"]}}),
    ),
    (
        "prefix climbs",
        _create_body(
            agentRuntimeArtifact={
                "codeConfiguration": {**CODE, "code": {"s3": {"bucket": "agents", "prefix": "../../etc"}}}
            }
        ),
    ),
    (
        "bucket bad",
        _create_body(
            agentRuntimeArtifact={"codeConfiguration": {**CODE, "code": {"s3": {"bucket": "..", "prefix": "x"}}}}
        ),
    ),
    ("runtime enum", _create_body(agentRuntimeArtifact={"codeConfiguration": {**CODE, "runtime": "PYTHON_2_7"}})),
    ("lifecycle strings", _create_body(lifecycleConfiguration={"idleRuntimeSessionTimeout": "900"})),
    ("lifecycle float", _create_body(lifecycleConfiguration={"maxLifetime": 900.5})),
    ("lifecycle huge", _create_body(lifecycleConfiguration={"maxLifetime": 10**100})),
    ("lifecycle negative", _create_body(lifecycleConfiguration={"maxLifetime": -1})),
    ("lifecycle bool", _create_body(lifecycleConfiguration={"maxLifetime": True})),
    ("env is a list", _create_body(environmentVariables=["A=1"])),
    ("env value object", _create_body(environmentVariables={"A": {"b": 1}})),
    ("env key with =", _create_body(environmentVariables={"A=B": "1"})),
    ("env key empty", _create_body(environmentVariables={"": "1"})),
    ("description huge", _create_body(description="d" * 5000)),
    ("description empty", _create_body(description="")),
    ("tags is a list", _create_body(tags=["a"])),
    ("tag value null", _create_body(tags={"a": None})),
    ("client token short", _create_body(clientToken="abc")),
    ("client token weird", _create_body(clientToken="x" * 40 + "!")),
    ("protocol unknown", _create_body(protocolConfiguration={"serverProtocol": "GOPHER"})),
    ("path without slash", _create_body(protocolConfiguration={"serverProtocol": "HTTP", "path": "invocations"})),
    ("header list empty", _create_body(requestHeaderConfiguration={"requestHeaderAllowlist": []})),
    (
        "header list long",
        _create_body(requestHeaderConfiguration={"requestHeaderAllowlist": [f"H{i}" for i in range(21)]}),
    ),
    ("header CRLF", _create_body(requestHeaderConfiguration={"requestHeaderAllowlist": ["X-A\r\nX-B"]})),
    ("allowed ports huge", _create_body(allowedPorts=[{"port": 70000}])),
    ("filesystems not list", _create_body(filesystemConfigurations={"a": 1})),
    ("hooks blob", _create_body(hooksConfiguration={"build": {"x": "y" * 200_000}})),
    (
        "authorizer blob",
        _create_body(
            authorizerConfiguration={
                "customJWTAuthorizer": {
                    "discoveryUrl": "https://idp.example.com/.well-known/openid-configuration",
                    "extra": "z" * 200_000,
                }
            }
        ),
    ),
]


@pytest.mark.parametrize(("label", "body"), BODIES, ids=[label for label, _ in BODIES])
def test_bad_create_bodies(server: HangarServer, label: str, body: bytes) -> None:
    response = signed(server, "PUT", "/runtimes/", body, {"Content-Type": "application/json"})
    _assert_aws_error(response, 400, "ValidationException")


REQUESTS: list[tuple[str, str, str, str]] = [
    ("GET", "/runtimes/..%2F..%2Fetc-abcdefghij/", "", "ValidationException"),
    ("GET", "/runtimes/%2e%2e/", "", "InvalidSignatureException"),  # SigV4 refuses dot segments first
    ("GET", "/runtimes/a%00b-abcdefghij/", "", "ValidationException"),
    ("GET", "/runtimes/%D0%B0%D0%B1-abcdefghij/", "", "ValidationException"),
    ("GET", "/runtimes/" + "a" * 5000 + "-abcdefghij/", "", "ValidationException"),
    ("GET", "/runtimes/ok-abcdefghij/", "version=0", "ValidationException"),
    ("GET", "/runtimes/ok-abcdefghij/", "version=100000", "ValidationException"),
    ("GET", "/runtimes/ok-abcdefghij/", "version=abc", "ValidationException"),
    ("POST", "/runtimes/", "maxResults=0", "ValidationException"),
    ("POST", "/runtimes/", "maxResults=101", "ValidationException"),
    ("POST", "/runtimes/", "maxResults=-1", "ValidationException"),
    ("POST", "/runtimes/", "maxResults=99999999999999999999999999", "ValidationException"),
    ("POST", "/runtimes/", "maxResults=1e3", "ValidationException"),
    ("POST", "/runtimes/", "maxResults=%D9%A3", "ValidationException"),
    ("POST", "/runtimes/", "nextToken=" + "A" * 3000, "ValidationException"),
    ("POST", "/runtimes/", "nextToken=eyJzIjoicnVudGltZXMiLCJrIjoiYSJ9.AAAA", "ValidationException"),
    ("POST", "/runtimes/", "nextToken=a%20b", "ValidationException"),
    ("DELETE", "/runtimes/ok-abcdefghij/", "clientToken=short", "ValidationException"),
    ("DELETE", "/runtimes/ok-abcdefghij/runtime-endpoints/..%2Fx/", "", "ValidationException"),
    ("GET", "/runtimes/ok-abcdefghij/runtime-endpoints/" + "e" * 300 + "/", "", "ValidationException"),
    (
        "GET",
        "/tags/arn%3Aaws%3Abedrock-agentcore%3Aus-west-2%3A123456789012%3Aruntime%2F..%2F..",
        "",
        "ValidationException",
    ),
    (
        "GET",
        "/tags/arn%3Aaws%3Abedrock-agentcore%3Aus-west-2%3A123456789012%3Aruntime%2F..",
        "",
        "ResourceNotFoundException",
    ),
    ("GET", "/tags/not-an-arn", "", "ValidationException"),
    (
        "DELETE",
        "/tags/arn%3Aaws%3Abedrock-agentcore%3Aus-west-2%3A123456789012%3Aruntime%2Fok-abcdefghij",
        "",
        "ValidationException",
    ),
    ("PATCH", "/runtimes/", "", "ValidationException"),
    ("GET", "/runtimes/ok-abcdefghij/versions/", "", "ValidationException"),
]


@pytest.mark.parametrize(("method", "path", "query", "code"), REQUESTS)
def test_bad_paths_and_queries(server: HangarServer, method: str, path: str, query: str, code: str) -> None:
    response = signed(server, method, path, query=query)
    status = {"ValidationException": 400, "InvalidSignatureException": 403, "ResourceNotFoundException": 404}[code]
    _assert_aws_error(response, status, code)


def test_oversize_body_is_refused(server: HangarServer) -> None:
    body = _create_body(description="d" * (11 * 1024 * 1024))
    response = signed(server, "PUT", "/runtimes/", body, {"Content-Type": "application/json"})
    _assert_aws_error(response, 400, "ValidationException")


def test_unknown_fields_are_tolerated(server: HangarServer) -> None:
    body = _create_body(futureField={"nested": [1, 2, 3]}, anotherOne="x")
    response = signed(server, "PUT", "/runtimes/", body, {"Content-Type": "application/json"})
    assert response.status_code == 202, response.text
    assert response.json()["status"] == "CREATING"


def test_unsigned_and_badly_signed_requests_are_denied(server: HangarServer) -> None:
    response = httpx.put(f"{server.url}/runtimes/", content=_create_body())
    assert 400 <= response.status_code < 500 and "x-amzn-ErrorType" in response.headers


def _assert_aws_error(response: Any, status: int, code: str) -> None:
    assert response.status_code == status, (response.status_code, response.text[:500])
    assert response.headers["x-amzn-ErrorType"] == code, response.text[:500]
    assert response.headers["content-type"].startswith("application/json")
    body = response.json()
    assert isinstance(body["message"], str) and body["message"]
    assert len(response.content) < 20_000  # hostile input is never echoed back in full


FULL_BODY: dict[str, Any] = {
    "agentRuntimeName": "fuzzed",
    "agentRuntimeArtifact": {"codeConfiguration": CODE},
    "roleArn": ROLE,
    "networkConfiguration": {
        "networkMode": "VPC",
        "networkModeConfig": {"securityGroups": ["sg-0123456789abcdef0"], "subnets": ["subnet-0123456789abcdef0"]},
    },
    "protocolConfiguration": {"serverProtocol": "MCP", "port": 9000, "path": "/mcp"},
    "lifecycleConfiguration": {"idleRuntimeSessionTimeout": 60, "maxLifetime": 120},
    "environmentVariables": {"A": "1"},
    "authorizerConfiguration": {
        "customJWTAuthorizer": {
            "discoveryUrl": "https://idp.example.com/.well-known/openid-configuration",
            "allowedAudience": ["a"],
            "allowedClients": ["c"],
            "allowedScopes": ["s"],
            "customClaims": [
                {
                    "inboundTokenClaimName": "team",
                    "inboundTokenClaimValueType": "STRING",
                    "authorizingClaimMatchValue": {
                        "claimMatchValue": {"matchValueString": "x"},
                        "claimMatchOperator": "EQUALS",
                    },
                }
            ],
        }
    },
    "requestHeaderConfiguration": {"requestHeaderAllowlist": ["X-Team"]},
    "allowedPorts": [{"portRange": {"from": 8000, "to": 8100}}],
    "resourceConfigurations": [{"minimumMemoryInMiB": 512}],
    "tags": {"k": "v"},
}
ODD_VALUES: list[Any] = [None, -1, 1e308, True, "", "x" * 3000, [None], {"a": None}, "\u0000😀", [[[]]]]


def _paths(node: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    found = [prefix] if prefix else []
    if isinstance(node, dict):
        for key, value in node.items():
            found += _paths(value, (*prefix, key))
    elif isinstance(node, list):
        for index, value in enumerate(node):
            found += _paths(value, (*prefix, index))
    return found


def _replaced(node: Any, path: tuple[Any, ...], value: Any) -> Any:
    copy = json.loads(json.dumps(node))
    target = copy
    for step in path[:-1]:
        target = target[step]
    target[path[-1]] = value
    return copy


def test_every_member_swapped_for_odd_values_never_fails_the_server(server: HangarServer) -> None:
    """Each member of a full create body replaced, one at a time, by each odd value: a 202 or an AWS 4xx."""
    statuses: dict[int, int] = {}
    http = httpx.Client()  # one keep-alive connection for the whole sweep
    for index, path in enumerate(_paths(FULL_BODY)):
        for number, odd in enumerate(ODD_VALUES):
            body = _replaced({**FULL_BODY, "agentRuntimeName": f"fz{index}_{number}"}, path, odd)
            if path == ("agentRuntimeName",):
                body["agentRuntimeName"] = odd
            response = signed(
                server, "PUT", "/runtimes/", json.dumps(body).encode(), {"Content-Type": "application/json"}, http=http
            )
            statuses[response.status_code] = statuses.get(response.status_code, 0) + 1
            assert response.status_code in (202, 400), (path, odd, response.status_code, response.text[:300])
            assert "x-amzn-ErrorType" in response.headers or response.status_code == 202
    http.close()
    assert statuses.get(400, 0) > 100


def test_endpoint_and_tag_bodies_swapped_for_odd_values(server: HangarServer) -> None:
    http = httpx.Client()
    created = signed(server, "PUT", "/runtimes/", _create_body(), {"Content-Type": "application/json"}, http=http)
    runtime_id, arn = created.json()["agentRuntimeId"], created.json()["agentRuntimeArn"]
    cases = [
        (
            "PUT",
            f"/runtimes/{runtime_id}/runtime-endpoints/",
            {"name": "e1", "agentRuntimeVersion": "1", "description": "d", "tags": {"a": "b"}},
        ),
        ("PUT", f"/runtimes/{runtime_id}/runtime-endpoints/DEFAULT/", {"agentRuntimeVersion": "1", "description": "d"}),
        ("PUT", f"/runtimes/{runtime_id}/", json.loads(_create_body())),
        ("POST", "/tags/" + quote(arn, safe=""), {"tags": {"a": "b"}}),
    ]
    for method, path, body in cases:
        for member in _paths(body):
            for odd in ODD_VALUES:
                response = signed(
                    server,
                    method,
                    path,
                    json.dumps(_replaced(body, member, odd)).encode(),
                    {"Content-Type": "application/json"},
                    http=http,
                )
                assert response.status_code < 500, (path, member, odd, response.text[:300])
                if response.status_code >= 400:
                    assert response.headers["x-amzn-ErrorType"], response.text[:300]
    http.close()


def test_no_request_above_reached_the_unexpected_error_path(server: HangarServer) -> None:
    """Runs last in this module: the server logged no unhandled exception for any hostile request."""
    log = server.log()
    assert "unhandled error while serving a request" not in log
    assert "Traceback" not in log
