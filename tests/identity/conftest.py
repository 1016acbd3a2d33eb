"""Shared fixtures of the identity tests: a control-plane client and a small real authorization-server metadata host."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from tests.support.postgres import postgres  # noqa: F401 - the session fixture
from tests.support.server import HangarServer


@pytest.fixture(scope="module")
def control(hangar: HangarServer) -> Any:
    """boto3 ``bedrock-agentcore-control`` signed with the server's admin key."""
    return hangar.boto3_client("bedrock-agentcore-control")


class _Metadata(BaseHTTPRequestHandler):
    """Serves ``/.well-known/openid-configuration`` naming endpoints on the same host; anything else is a 404."""

    def do_GET(self) -> None:
        base = f"http://127.0.0.1:{self.server.server_address[1]}"
        if self.path != "/.well-known/openid-configuration":
            self.send_error(404)
            return
        body = json.dumps(
            {
                "issuer": base,
                "authorization_endpoint": f"{base}/authorize",
                "token_endpoint": f"{base}/token",
                "token_endpoint_auth_methods_supported": ["client_secret_post", "private_key_jwt"],
            }
        ).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *_args: Any) -> None:
        pass


@pytest.fixture(scope="session")
def metadata_host() -> Iterator[str]:
    """Base URL of an HTTP server publishing OpenID discovery metadata (discoveryUrl is base + the well-known path)."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Metadata)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()
