"""The OAuth2 client against IdPs that never answer or drip bytes forever: the whole exchange has a deadline, so a
token request fails with a clear error instead of hanging. (The server uses a 15 s deadline; these tests build the
same client with a short one, against real sockets.)"""

from __future__ import annotations

import asyncio
import socket
import threading
from collections.abc import Iterator

import httpx
import pytest

from hangar.identity.oauth import IdpError, OAuthClient, Pkce
from hangar.identity.ports import OAuth2Client


def serve(behaviour: str) -> tuple[socket.socket, threading.Event]:
    """A listener that accepts and then stays silent (``silent``) or sends a status line and one byte a while
    (``drip``), until stopped."""
    listener = socket.create_server(("127.0.0.1", 0))
    stop = threading.Event()

    def run() -> None:
        listener.settimeout(0.2)
        held: list[socket.socket] = []
        while not stop.is_set():
            try:
                conn, _ = listener.accept()
            except (TimeoutError, OSError):
                continue
            held.append(conn)
            if behaviour == "drip":
                threading.Thread(target=drip, args=(conn, stop), daemon=True).start()
        for conn in held:
            conn.close()

    threading.Thread(target=run, daemon=True).start()
    return listener, stop


def drip(conn: socket.socket, stop: threading.Event) -> None:
    try:
        conn.recv(65536)
        conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 100000\r\n\r\n{")
        while not stop.wait(0.1):
            conn.sendall(b" ")
    except OSError:
        pass


@pytest.fixture(params=["silent", "drip"])
def stuck_idp(request: pytest.FixtureRequest) -> Iterator[str]:
    listener, stop = serve(request.param)
    yield f"http://127.0.0.1:{listener.getsockname()[1]}/token"
    stop.set()
    listener.close()


def client_for(token_endpoint: str) -> OAuth2Client:
    return OAuth2Client(
        provider_name="stuck",
        provider_arn="arn:aws:acps:us-west-2:123456789012:token-vault/default/oauth2credentialprovider/stuck",
        vendor="CustomOauth2",
        client_id="c",
        client_secret="s",
        token_endpoint=token_endpoint,
        authorization_endpoint=token_endpoint,
        callback_url="http://127.0.0.1:1/identities/oauth2/callback/stuck",
    )


def test_stuck_idp_fails_by_the_deadline(stuck_idp: str) -> None:
    oauth = OAuthClient(deadline_s=1.0, timeout=httpx.Timeout(30.0))  # only the overall deadline can end it

    async def attempt() -> IdpError:
        try:
            with pytest.raises(IdpError) as failed:
                await oauth.client_credentials(client_for(stuck_idp), ["read"])
            return failed.value
        finally:
            await oauth.stop()

    error = asyncio.run(attempt())
    assert "did not answer within 1s" in error.message  # the deadline, not the (30 s) read timeout, ended it


def test_authorization_url_carries_pkce_and_state() -> None:
    client = client_for("http://127.0.0.1:1/token")
    pkce = Pkce.new()
    oauth = OAuthClient()
    endpoints = asyncio.run(oauth.endpoints(client))
    url = oauth.authorization_url(client, endpoints, ["a", "b"], "st4te", pkce, extra={"state": "evil", "x": "y"})
    query = httpx.URL(url).params
    assert query["state"] == "st4te" and query["x"] == "y"  # custom parameters never override the protocol's own
    assert query["code_challenge"] == pkce.challenge and query["code_challenge_method"] == "S256"
    assert query["redirect_uri"] == client.callback_url and query["scope"] == "a b"
    assert pkce.verifier not in url
