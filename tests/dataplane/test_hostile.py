"""Hostile input at the data-plane boundary: every answer is AWS-shaped, never a 500, and nothing reaches an agent."""

from __future__ import annotations

import json
import socket
from typing import Any
from urllib.parse import quote

import httpx
import pytest
from botocore.exceptions import ClientError

from tests.control.support import signed
from tests.dataplane.support import deploy, new_session_id
from tests.support.server import HangarServer

SESSION_HEADER = "X-Amzn-Bedrock-AgentCore-Runtime-Session-Id"


@pytest.fixture(scope="module")
def echo(control: Any) -> dict[str, Any]:
    return deploy(control, "echo", description="hostile")


def _invoke_path(ref: str) -> str:
    return f"/runtimes/{quote(ref, safe='')}/invocations"


def _assert_aws_error(response: httpx.Response, status: int, code: str) -> None:
    assert response.status_code == status, response.text
    assert response.headers["x-amzn-ErrorType"] == code
    assert isinstance(response.json()["message"], str)


@pytest.mark.parametrize(
    ("ref", "status", "code"),
    [
        ("arn:aws:bedrock-agentcore:us-west-2:123456789012:runtime/..", 400, "ValidationException"),
        ("../../etc/passwd", 400, "ValidationException"),
        (
            "arn:aws:bedrock-agentcore:us-west-2:123456789012:runtime/nosuch-abcdefghij",
            404,
            "ResourceNotFoundException",
        ),
        (
            "arn:aws:bedrock-agentcore:us-west-2:999999999999:runtime/nosuch-abcdefghij",
            404,
            "ResourceNotFoundException",
        ),
        ("nosuch-abcdefghij", 400, "ValidationException"),  # a bare id needs accountId
        ("x" * 3000, 400, "ValidationException"),
        ("\x00\r\n", 400, "ValidationException"),
    ],
)
def test_bad_runtime_references(server: HangarServer, ref: str, status: int, code: str) -> None:
    response = signed(server, "POST", _invoke_path(ref), b"{}", {SESSION_HEADER: new_session_id()})
    _assert_aws_error(response, status, code)


def test_unknown_qualifier_and_bad_account(server: HangarServer, echo: dict[str, Any]) -> None:
    path = _invoke_path(echo["agentRuntimeArn"])
    headers = {SESSION_HEADER: new_session_id()}
    _assert_aws_error(
        signed(server, "POST", path, b"{}", headers, "qualifier=nosuch"), 404, "ResourceNotFoundException"
    )
    _assert_aws_error(signed(server, "POST", path, b"{}", headers, "qualifier=..%2F"), 400, "ValidationException")
    by_id = _invoke_path(echo["agentRuntimeId"])
    _assert_aws_error(signed(server, "POST", by_id, b"{}", headers, "accountId=12ab"), 400, "ValidationException")
    ok = signed(server, "POST", by_id, b'{"a": 1}', headers, "accountId=123456789012")
    assert ok.status_code == 200 and ok.json()["echo"] == {"a": 1}


@pytest.mark.parametrize("session_id", ["s" * 32, "s" * 257, ""])
def test_session_ids_out_of_bounds(server: HangarServer, echo: dict[str, Any], session_id: str) -> None:
    headers = {SESSION_HEADER: session_id}
    response = signed(server, "POST", _invoke_path(echo["agentRuntimeArn"]), b"{}", headers)
    _assert_aws_error(response, 400, "ValidationException")


def test_missing_session_id_gets_a_fresh_one_echoed(server: HangarServer, echo: dict[str, Any]) -> None:
    response = signed(server, "POST", _invoke_path(echo["agentRuntimeArn"]), b'{"x": 1}')
    assert response.status_code == 200
    assert 33 <= len(response.headers[SESSION_HEADER]) <= 256
    assert response.json()["session_id"] == response.headers[SESSION_HEADER]


def test_unsigned_and_badly_signed_requests_are_refused(server: HangarServer, echo: dict[str, Any]) -> None:
    path = _invoke_path(echo["agentRuntimeArn"])
    unsigned = httpx.post(f"{server.url}{path}", content=b"{}", headers={SESSION_HEADER: new_session_id()})
    assert unsigned.status_code in (401, 403) and "x-amzn-ErrorType" in unsigned.headers
    forged = signed(server, "POST", path, b"{}", {SESSION_HEADER: new_session_id()})
    assert forged.status_code == 200
    request = httpx.Request("POST", f"{server.url}{path}", content=b"[]", headers=forged.request.headers)
    with httpx.Client() as client:
        tampered = client.send(request)  # the signature covers the original body's hash
    assert tampered.status_code == 403 and tampered.headers["x-amzn-ErrorType"].endswith("Exception")


def test_refusals_do_not_reveal_which_runtimes_exist(server: HangarServer, echo: dict[str, Any]) -> None:
    """Unsigned or badly signed callers get the same answer for a real runtime and a made-up one."""
    made_up = echo["agentRuntimeArn"].rsplit("-", 1)[0] + "-zzzzzzzzzz"
    answers = []
    for arn in (echo["agentRuntimeArn"], made_up):
        path = _invoke_path(arn)
        unsigned = httpx.post(f"{server.url}{path}", content=b"{}", headers={SESSION_HEADER: new_session_id()})
        good = signed(server, "POST", path, b"{}", {SESSION_HEADER: new_session_id()})
        forged_headers = {**good.request.headers, "authorization": good.request.headers["authorization"][:-4] + "0000"}
        forged = httpx.post(f"{server.url}{path}", content=b"{}", headers=forged_headers)
        answers.append(
            [(r.status_code, r.headers.get("x-amzn-ErrorType"), r.json()["message"]) for r in (unsigned, forged)]
        )
    assert answers[0] == answers[1]
    assert [status for status, _, _ in answers[0]] == [403, 403]


def test_declared_oversized_payload_is_refused_before_reading_it(server: HangarServer, echo: dict[str, Any]) -> None:
    path = _invoke_path(echo["agentRuntimeArn"])
    with socket.create_connection(("127.0.0.1", server.port), timeout=30) as sock:
        sock.sendall(
            f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 100000001\r\n"
            f"{SESSION_HEADER}: {new_session_id()}\r\n\r\n".encode()
        )
        answer = sock.recv(65536).decode("latin-1")
    assert answer.startswith("HTTP/1.1 400")
    assert "ValidationException" in answer


def test_streamed_oversized_payload_is_refused(server: HangarServer, echo: dict[str, Any]) -> None:
    def body():  # type: ignore[no-untyped-def]
        block = b"x" * (1024 * 1024)
        for _ in range(96):
            yield block
        yield b"x" * (100_000_001 - 96 * len(block))

    path = _invoke_path(echo["agentRuntimeArn"])
    response = httpx.post(
        f"{server.url}{path}", content=body(), headers={SESSION_HEADER: new_session_id()}, timeout=120
    )
    _assert_aws_error(response, 400, "ValidationException")


def test_garbage_from_the_agent_is_a_runtime_client_error(data: Any, control: Any) -> None:
    garbage = deploy(control, "garbage")
    with pytest.raises(ClientError) as raised:
        data.invoke_agent_runtime(agentRuntimeArn=garbage["agentRuntimeArn"], payload=b"{}")
    assert raised.value.response["Error"]["Code"] == "RuntimeClientError"
    assert "valid HTTP response" in raised.value.response["Error"]["Message"]


def test_bad_command_and_stop_requests(server: HangarServer, echo: dict[str, Any]) -> None:
    arn = quote(echo["agentRuntimeArn"], safe="")
    headers = {SESSION_HEADER: new_session_id(), "Content-Type": "application/json"}
    for body in (b"{}", b'{"command": ""}', b'{"command": "ls", "timeout": "1"}', b"[1]", b"not json"):
        _assert_aws_error(
            signed(server, "POST", f"/runtimes/{arn}/commands", body, headers), 400, "ValidationException"
        )
    no_session = {"Content-Type": "application/json"}
    stop = f"/runtimes/{arn}/stopruntimesession"
    _assert_aws_error(signed(server, "POST", stop, b"{}", no_session), 400, "ValidationException")
    _assert_aws_error(signed(server, "POST", stop, json.dumps({}).encode(), headers), 404, "ResourceNotFoundException")


def test_wrong_methods_are_not_server_errors(server: HangarServer, echo: dict[str, Any]) -> None:
    path = _invoke_path(echo["agentRuntimeArn"])
    for method in ("GET", "PUT", "DELETE"):
        response = signed(server, method, path)
        assert 400 <= response.status_code < 500, (method, response.status_code, response.text)
