"""Hostile input at the agent's HTTP boundary: the app answers with a contract error and keeps serving."""

from __future__ import annotations

import json
import socket
from collections.abc import Iterator

import httpx
import pytest

from hangar.sdk import AgentApp
from tests.sdk.agents import build_agent
from tests.sdk.servers import ThreadServer

TIMEOUT = 60.0


@pytest.fixture(scope="module")
def agent() -> Iterator[ThreadServer]:
    server = ThreadServer(build_agent(AgentApp, "sync")).start()
    try:
        yield server
    finally:
        server.stop()


def post(agent: ThreadServer, body: bytes, headers: list[tuple[str, str]] | None = None) -> httpx.Response:
    return httpx.post(f"{agent.url}/invocations", content=body, headers=headers or [], timeout=TIMEOUT)


def still_serving(agent: ThreadServer) -> bool:
    ping = httpx.get(f"{agent.url}/ping", timeout=TIMEOUT)
    echo = post(agent, b'{"alive": true}')
    return ping.status_code == 200 and echo.json() == {"payload": {"alive": True}}


def test_huge_body_round_trips(agent: ThreadServer) -> None:
    blob = "é" * (12 * 1024 * 1024)  # 24 MiB of UTF-8, decoded off the server loop
    response = post(agent, json.dumps({"blob": blob}, ensure_ascii=False).encode())
    assert response.status_code == 200
    assert response.json() == {"payload": {"blob": blob}}
    assert still_serving(agent)


@pytest.mark.parametrize(
    ("body", "error", "details_start"),
    [
        (b"{" + b" " * 200_000, "Invalid JSON", "Expecting property name enclosed in double quotes"),
        (b'{"a": "' + b"\xff" * 200_000 + b'"}', "Invalid encoding", "'utf-8' codec can't decode byte 0xff"),
        (b"\x00\x01\x02garbage", "Invalid JSON", "Expecting value"),
        (b"[" * 300_000, "Invalid JSON", "nesting too deep"),
        (b'"' + b"\\ud800" + b'"', None, None),
    ],
    ids=["large-invalid-json", "large-bad-utf8", "binary-garbage", "deep-nesting", "escaped-lone-surrogate"],
)
def test_bad_bodies_get_contract_errors(
    agent: ThreadServer, body: bytes, error: str | None, details_start: str | None
) -> None:
    response = post(agent, body)
    if error is None:
        assert response.status_code == 200
        assert response.content == b'{"payload": "\\ud800"}'
    else:
        assert response.status_code == 400
        assert response.headers["content-type"] == "application/json"
        assert response.json()["error"] == error
        assert response.json()["details"].startswith(details_start)
    assert still_serving(agent)


def test_truncated_body_does_not_hurt_the_server(agent: ThreadServer) -> None:
    with socket.create_connection(("127.0.0.1", agent.port), timeout=TIMEOUT) as raw:
        raw.sendall(b'POST /invocations HTTP/1.1\r\nHost: x\r\nContent-Length: 100000\r\n\r\n{"partial": ')
    assert still_serving(agent)


def test_malformed_request_line_and_header_are_rejected_before_the_app(agent: ThreadServer) -> None:
    for request in (
        b"POST /invocations HTTP/1.1\r\nHost: x\r\nBad Header Name: v\r\nContent-Length: 2\r\n\r\n{}",
        b"NOT-HTTP\r\n\r\n",
    ):
        with socket.create_connection(("127.0.0.1", agent.port), timeout=TIMEOUT) as raw:
            raw.sendall(request)
            answer = raw.recv(65536)
        assert answer.startswith(b"HTTP/1.1 400")
    assert still_serving(agent)


def test_many_and_odd_headers_are_forwarded_by_the_rules(agent: ThreadServer) -> None:
    headers = [(f"X-Custom-{index}", f"value-{index}") for index in range(200)]
    headers += [
        ("X-Case", "first"),
        ("x-CASE", "second"),
        ("X-Amzn-Bedrock-AgentCore-Runtime-Request-Id", "r" * 4000),
        ("X-Amzn-Bedrock-AgentCore-Runtime-Session-Id", "sess\tion"),
        ("X-Amzn-Requestid", "hidden"),
        ("Proxy-Authorization", "hidden"),
    ]
    response = post(agent, b'{"kind": "headers"}', headers)
    view = response.json()
    forwarded = view["request_headers"]
    assert all(forwarded[f"x-custom-{index}"] == f"value-{index}" for index in range(200))
    assert forwarded["x-case"] == "second"
    assert "x-amzn-requestid" not in forwarded
    assert "proxy-authorization" not in forwarded
    assert view["ctx_request_id"] == "r" * 4000
    assert view["session_id"] == "sess\tion"
    assert still_serving(agent)
