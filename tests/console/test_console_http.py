"""The console's sign-in rules over plain HTTP (httpx against a real server): redirects, refusals, CSRF, cookies."""

from __future__ import annotations

import re
from typing import Any

import httpx
import pytest

from tests.support.server import HangarServer


def login_form(client: httpx.Client) -> str:
    page = client.get("/console/login")
    assert page.status_code == 200
    found = re.search(r'name="csrf" value="([^"]+)"', page.text)
    assert found is not None
    return found.group(1)


def sign_in(client: httpx.Client, key: tuple[str, str]) -> httpx.Response:
    token = login_form(client)
    return client.post("/console/login", data={"csrf": token, "access_key_id": key[0], "secret_access_key": key[1]})


def page_csrf(client: httpx.Client, path: str = "/console/sessions") -> str:
    found = re.search(r'name="csrf" value="([^"]+)"', client.get(path).text)
    assert found is not None
    return found.group(1)


@pytest.fixture
def client(server: HangarServer) -> Any:
    with httpx.Client(base_url=server.url, timeout=30) as http:
        yield http


@pytest.mark.parametrize("path", ["/console/", "/console/runtimes", "/console/sessions", "/console/invoke"])
def test_pages_without_a_session_go_to_the_login_page(client: httpx.Client, path: str) -> None:
    response = client.get(path)
    assert response.status_code == 303
    assert response.headers["location"] == "/console/login"


def test_actions_without_a_session_are_refused(client: httpx.Client) -> None:
    assert client.post("/console/sessions/rt-abcdefghij/" + "s" * 40 + "/stop").status_code == 401
    assert client.post("/console/invoke/rt-abcdefghij", content=b"{}").status_code == 401


def test_a_bad_key_gets_a_401_page(client: httpx.Client, admin_key: tuple[str, str]) -> None:
    response = sign_in(client, (admin_key[0], admin_key[1] + "x"))
    assert response.status_code == 401
    assert "wrong secret" in response.text
    assert "hangar_console=" not in response.headers.get("set-cookie", "")
    assert sign_in(client, ("AKIAUNKNOWNKEY000000", "x" * 40)).status_code == 401


def test_login_without_its_csrf_token_is_refused(client: httpx.Client, admin_key: tuple[str, str]) -> None:
    login_form(client)
    response = client.post(
        "/console/login", data={"csrf": "forged", "access_key_id": admin_key[0], "secret_access_key": admin_key[1]}
    )
    assert response.status_code == 403
    assert "hangar_console" not in client.cookies or client.cookies.get("hangar_console") is None


def test_sign_in_sets_a_strict_httponly_cookie_holding_no_secret(
    client: httpx.Client, admin_key: tuple[str, str]
) -> None:
    response = sign_in(client, admin_key)
    assert response.status_code == 303 and response.headers["location"] == "/console/runtimes"
    cookie = next(v for v in response.headers.get_list("set-cookie") if v.startswith("hangar_console="))
    flags = cookie.lower()
    assert "httponly" in flags and "samesite=strict" in flags and "path=/console" in flags
    assert "secure" not in flags  # plain http on loopback; https gets Secure
    value = cookie.split(";", 1)[0].split("=", 1)[1]
    assert admin_key[1] not in value and admin_key[0] not in value and len(value) >= 40
    assert client.get("/console/runtimes").status_code == 200


def test_a_session_id_brought_to_login_is_replaced(server: HangarServer, admin_key: tuple[str, str]) -> None:
    with httpx.Client(base_url=server.url, timeout=30) as http:
        sign_in(http, admin_key)
        first = http.cookies.get("hangar_console")
        assert first
        sign_in(http, admin_key)  # signing in again while holding a valid id still mints a new one
        second = http.cookies.get("hangar_console")
        assert second and second != first
    with httpx.Client(base_url=server.url, timeout=30) as http:
        assert http.get("/console/runtimes", headers={"cookie": f"hangar_console={first}"}).status_code == 303
        assert http.get("/console/runtimes", headers={"cookie": f"hangar_console={second}"}).status_code == 200
    with httpx.Client(base_url=server.url, timeout=30) as http:
        token = login_form(http)
        planted = f"hangar_console={second}; hangar_console_login={token}"
        response = http.post(
            "/console/login",
            data={"csrf": token, "access_key_id": admin_key[0], "secret_access_key": admin_key[1]},
            headers={"cookie": planted},
        )
        assert response.status_code == 303
        fresh = response.cookies.get("hangar_console")
        assert fresh and fresh not in (first, second)
        # the id the browser brought is ended, not kept alongside
        assert http.get("/console/runtimes", headers={"cookie": f"hangar_console={second}"}).status_code == 303


def test_posts_without_the_csrf_token_are_refused(
    client: httpx.Client, admin_key: tuple[str, str], runtime: dict[str, Any]
) -> None:
    sign_in(client, admin_key)
    stop = "/console/sessions/" + runtime["agentRuntimeId"] + "/" + "s" * 40 + "/stop"
    assert client.post(stop).status_code == 403
    assert client.post(stop, data={"csrf": "wrong"}).status_code == 403
    assert client.post("/console/logout").status_code == 403
    invoke = client.post(f"/console/invoke/{runtime['agentRuntimeId']}", content=b'{"a": 1}')
    assert invoke.status_code == 403
    assert client.get("/console/runtimes").status_code == 200  # still signed in: the forged logout did nothing


def test_invoke_and_logout_with_the_token(
    client: httpx.Client, admin_key: tuple[str, str], runtime: dict[str, Any]
) -> None:
    sign_in(client, admin_key)
    csrf = page_csrf(client)
    answer = client.post(
        f"/console/invoke/{runtime['agentRuntimeId']}",
        params={"sessionId": "console-http-test-session-0000000000000"},
        content=b'{"hello": "world"}',
        headers={"x-csrf-token": csrf, "content-type": "application/json"},
    )
    assert answer.status_code == 200, answer.text
    assert answer.json() == {"echo": {"hello": "world"}}
    listed = client.get("/console/sessions").text  # the session's row names its node (one process: "local")
    row = listed[listed.index('data-session="console-http-test-session-0000000000000"') :].split("</tr>")[0]
    assert "<td>local</td>" in row, row
    assert client.post("/console/logout", data={"csrf": csrf}).status_code == 303
    assert client.get("/console/runtimes").status_code == 303


def test_failed_logins_are_rate_limited(server: HangarServer, admin_key: tuple[str, str]) -> None:
    with httpx.Client(base_url=server.url, timeout=30) as http:
        guessed = "AKIAGUESSEDKEY000001"
        codes = [sign_in(http, (guessed, "wrong")).status_code for _ in range(6)]
        assert codes[:5] == [401] * 5 and codes[5] == 429
        refused = sign_in(http, (guessed, "another guess"))
        assert refused.status_code == 429 and "wait a minute" in refused.text
        assert sign_in(http, admin_key).status_code == 303  # another key is not locked out by the guesses


def test_the_websocket_wants_this_origin_and_the_csrf_token(
    server: HangarServer, admin_key: tuple[str, str], runtime: dict[str, Any]
) -> None:
    from websockets.exceptions import InvalidStatus
    from websockets.sync.client import connect

    with httpx.Client(base_url=server.url, timeout=30) as http:
        sign_in(http, admin_key)
        cookie = f"hangar_console={http.cookies.get('hangar_console')}"
        csrf = page_csrf(http)
    base = server.url.replace("http://", "ws://") + f"/console/ws/{runtime['agentRuntimeId']}"
    query = "?sessionId=console-websocket-test-session-00000000001"
    own = server.url
    for origin, suffix in (("http://evil.example", f"&csrf={csrf}"), (own, ""), (own, "&csrf=forged")):
        with pytest.raises(InvalidStatus) as refused:
            connect(base + query + suffix, additional_headers={"cookie": cookie, "origin": origin}).close()
        assert refused.value.response.status_code == 403
    with pytest.raises(InvalidStatus):  # no cookie at all
        connect(base + query + f"&csrf={csrf}", additional_headers={"origin": own}).close()
    with connect(base + query + f"&csrf={csrf}", additional_headers={"cookie": cookie, "origin": own}) as socket:
        socket.send("hello")
        assert socket.recv(timeout=30) == "echo: hello"


def test_a_failed_build_shows_its_reason(server: HangarServer, admin_key: tuple[str, str]) -> None:
    import uuid

    from tests.dataplane.support import BUCKET, ROLE, wait_for

    control = server.boto3_client("bedrock-agentcore-control")
    created = control.create_agent_runtime(
        agentRuntimeName=f"broken_{uuid.uuid4().hex[:8]}",
        agentRuntimeArtifact={
            "codeConfiguration": {
                "code": {"s3": {"bucket": BUCKET, "prefix": "gated/"}},
                "runtime": "PYTHON_3_11",
                "entryPoint": ["no_such_file.py"],
            }
        },
        roleArn=ROLE,
    )
    runtime_id = created["agentRuntimeId"]
    failed = wait_for(
        lambda: (doc := control.get_agent_runtime(agentRuntimeId=runtime_id))["status"] == "CREATE_FAILED" and doc,
        timeout=120,
    )
    reason = failed["failureReason"]
    assert "no_such_file.py" in reason
    with httpx.Client(base_url=server.url, timeout=30) as http:
        sign_in(http, admin_key)
        listing = http.get("/console/runtimes").text
        detail = http.get(f"/console/runtimes/{runtime_id}").text
    escaped = reason.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;").replace("'", "&#39;")
    escaped = escaped.replace('"', "&#34;")
    assert "CREATE_FAILED" in listing and escaped in listing
    assert escaped in detail and "Build log of version" not in detail  # nothing READY: no build log
