"""The supervisor on its own (no sandbox): its command line, and the relay's half-close handling."""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from hangar.sandbox.supervised import SUPERVISOR
from hangar.sandbox.supervisor import parse


def test_parse_reads_fds_port_and_argv() -> None:
    options, argv = parse(["--agent-fd=3", "--control-fd=4", "--ready-fd=5", "--port=8080", "--", "python", "x.py"])
    assert options == {"agent_fd": 3, "control_fd": 4, "ready_fd": 5, "port": 8080, "outbound": []}
    assert argv == ["python", "x.py"]


def test_parse_reads_outbound_ports() -> None:
    args = ["--agent-fd=3", "--control-fd=4", "--ready-fd=5", "--port=8080", "--outbound=9443:/run/hangar/i.sock"]
    options, _ = parse([*args, "--outbound=9480:/run/hangar/c.sock", "--", "python"])
    assert options["outbound"] == [(9443, "/run/hangar/i.sock"), (9480, "/run/hangar/c.sock")]
    for bad in ("--outbound=x:/a", "--outbound=9443:relative", "--outbound=9443"):
        with pytest.raises(SystemExit):
            parse([*args, bad, "--", "python"])


@pytest.mark.parametrize(
    "args",
    [
        ["--agent-fd=3", "--control-fd=4", "--ready-fd=5", "--port=8080"],  # no argv
        ["--agent-fd=3", "--control-fd=4", "--ready-fd=5", "--", "python"],  # no port
        ["--agent-fd=x", "--control-fd=4", "--ready-fd=5", "--port=1", "--", "python"],
        ["--color=1", "--agent-fd=3", "--control-fd=4", "--ready-fd=5", "--port=1", "--", "python"],
    ],
)
def test_parse_refuses_a_bad_command_line(args: list[str]) -> None:
    with pytest.raises(SystemExit):
        parse(args)


def sockets_of(pid: int) -> int:
    count = 0
    for fd in os.listdir(f"/proc/{pid}/fd"):
        with contextlib.suppress(FileNotFoundError):  # closed between the listing and the look
            count += os.readlink(f"/proc/{pid}/fd/{fd}").startswith("socket:")
    return count


@pytest.fixture
def half_closing_server() -> Iterator[int]:
    """A TCP server that reads to EOF, answers, and closes: like an HTTP/1.0 agent."""
    server = socket.create_server(("127.0.0.1", 0))
    port = server.getsockname()[1]

    def serve() -> None:
        conn, _ = server.accept()
        with conn:
            data = b""
            while chunk := conn.recv(65536):
                data += chunk
            conn.sendall(b"got %d" % len(data))

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    yield port
    server.close()
    thread.join(timeout=5)


def test_relay_forwards_half_closes_and_then_lets_go(tmp_path: Path, half_closing_server: int) -> None:
    agent_sock = socket.socket(socket.AF_UNIX)
    agent_sock.bind(str(tmp_path / "agent.sock"))
    agent_sock.listen()
    control_sock = socket.socket(socket.AF_UNIX)
    control_sock.bind(str(tmp_path / "control.sock"))
    control_sock.listen()
    ready_r, ready_w = os.pipe()
    fds = (agent_sock.fileno(), control_sock.fileno(), ready_w)
    argv = [sys.executable, "-I", str(SUPERVISOR), f"--agent-fd={fds[0]}", f"--control-fd={fds[1]}"]
    argv += [f"--ready-fd={ready_w}", f"--port={half_closing_server}", "--", "/bin/sleep", "30"]
    proc = subprocess.Popen(argv, pass_fds=fds)
    try:
        os.close(ready_w)
        agent_sock.close()
        control_sock.close()
        assert os.read(ready_r, 1) == b"1"
        # "L": the port listens, and the supervisor's listening watch (a netlink socket per look) is over.
        assert os.read(ready_r, 1) == b"L"
        idle = sockets_of(proc.pid)
        client = socket.socket(socket.AF_UNIX)
        client.settimeout(10)
        client.connect(str(tmp_path / "agent.sock"))
        client.sendall(b"x" * 100_000)
        client.shutdown(socket.SHUT_WR)  # our half-close must reach the server, or it never answers
        answer = b""
        while chunk := client.recv(65536):
            answer += chunk
        assert answer == b"got 100000"
        deadline = time.monotonic() + 5
        while sockets_of(proc.pid) != idle and time.monotonic() < deadline:
            time.sleep(0.01)
        assert sockets_of(proc.pid) == idle  # both directions ended: the supervisor let go of both sides
        client.close()
    finally:
        proc.terminate()
        proc.wait(timeout=10)
        os.close(ready_r)


AGENT_DIALS_AT_ONCE = """
import socket, sys
with socket.create_connection(("127.0.0.1", int(sys.argv[1])), timeout=10) as conn:
    conn.sendall(b"hello")
    conn.shutdown(socket.SHUT_WR)
    answer = b""
    while chunk := conn.recv(100):
        answer += chunk
open(sys.argv[2], "wb").write(answer)
"""


def test_outbound_port_is_listening_before_the_agent_starts_and_reaches_the_host_socket(tmp_path: Path) -> None:
    """The agent connects to its outbound port as its first act (like botocore fetching credentials at import):
    the connection is spliced to the host's Unix socket, whose answer comes back."""
    host = socket.socket(socket.AF_UNIX)
    host.bind(str(tmp_path / "host.sock"))
    host.listen()

    def serve() -> None:
        conn, _ = host.accept()
        with conn:
            data = b""
            while chunk := conn.recv(100):
                data += chunk
            conn.sendall(data.upper())

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    agent_sock = socket.socket(socket.AF_UNIX)
    agent_sock.bind(str(tmp_path / "agent.sock"))
    agent_sock.listen()
    control_sock = socket.socket(socket.AF_UNIX)
    control_sock.bind(str(tmp_path / "control.sock"))
    control_sock.listen()
    ready_r, ready_w = os.pipe()
    fds = (agent_sock.fileno(), control_sock.fileno(), ready_w)
    argv = [sys.executable, "-I", str(SUPERVISOR), f"--agent-fd={fds[0]}", f"--control-fd={fds[1]}"]
    argv += [f"--ready-fd={ready_w}", "--port=1", f"--outbound={port}:{tmp_path / 'host.sock'}", "--"]
    argv += [sys.executable, "-c", AGENT_DIALS_AT_ONCE, str(port), str(tmp_path / "answer")]
    proc = subprocess.Popen(argv, pass_fds=fds)
    try:
        os.close(ready_w)
        agent_sock.close()
        control_sock.close()
        assert proc.wait(timeout=30) == 0  # the supervisor exits with the agent's status
        assert (tmp_path / "answer").read_bytes() == b"HELLO"
    finally:
        if proc.poll() is None:
            proc.kill()
        os.close(ready_r)
        host.close()
        thread.join(timeout=5)
