"""A stand-in for the internet: a network namespace we create, reached from the host through a veth pair, with an
HTTP server that answers with the client address it sees. Egress tests never send a packet off this machine."""

from __future__ import annotations

import secrets
import subprocess
import textwrap
from collections.abc import Iterator
from dataclasses import dataclass

import pytest

SERVER = textwrap.dedent(
    """
    import http.server, sys
    class Echo(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            body = self.client_address[0].encode()
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
        def log_message(self, *args):
            pass
    server = http.server.HTTPServer((sys.argv[1], 8081), Echo)
    print("ready", flush=True)
    server.serve_forever()
    """
)


@dataclass(frozen=True)
class Wan:
    host_ip: str  # the host's address on the WAN link: what a NATed sandbox must appear as
    server_ip: str
    port: int = 8081


def _run(*argv: str) -> None:
    subprocess.run(argv, check=True, capture_output=True, timeout=10)


@pytest.fixture
def wan() -> Iterator[Wan]:
    suffix = secrets.token_hex(3)
    netns, host_if = f"hangar-test-wan-{suffix}", f"tw{suffix}"
    third = int(suffix[:2], 16)
    wan = Wan(host_ip=f"198.18.{third}.1", server_ip=f"198.18.{third}.2")
    _run("ip", "netns", "add", netns)
    server = None
    try:
        _run("ip", "link", "add", host_if, "type", "veth", "peer", "name", "eth0", "netns", netns)
        _run("ip", "addr", "add", f"{wan.host_ip}/30", "dev", host_if)
        _run("ip", "link", "set", host_if, "up")
        _run("ip", "-n", netns, "addr", "add", f"{wan.server_ip}/30", "dev", "eth0")
        _run("ip", "-n", netns, "link", "set", "eth0", "up")
        server = subprocess.Popen(
            ["ip", "netns", "exec", netns, "/usr/bin/python3", "-c", SERVER, wan.server_ip], stdout=subprocess.PIPE
        )
        assert server.stdout is not None and server.stdout.readline() == b"ready\n"
        yield wan
    finally:
        if server is not None:
            server.kill()
            server.wait(timeout=10)
        subprocess.run(["ip", "link", "del", host_if], capture_output=True, timeout=10, check=False)
        subprocess.run(["ip", "netns", "del", netns], capture_output=True, timeout=10, check=False)
