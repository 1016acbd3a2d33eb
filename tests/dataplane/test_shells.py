"""InvokeAgentRuntimeCommandShell: a pty in a session over ``/runtimes/{arn}/ws/shells``, driven by a raw
``websockets`` client, by the bedrock-agentcore SDK's URL signers and framer, and by ``hangar shell`` under tmux."""

from __future__ import annotations

import asyncio
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlencode

import pytest
import websockets
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials
from websockets.asyncio.client import ClientConnection
from websockets.exceptions import ConnectionClosed, InvalidStatus

from tests.dataplane.support import deploy, new_session_id, session_state, wait_for
from tests.support.server import HangarServer, read_admin_key

SESSION_HEADER = "X-Amzn-Bedrock-AgentCore-Runtime-Session-Id"
STDIN, STDOUT, STDERR, STATUS, RESIZE, HEARTBEAT, CLOSE = 0x00, 0x01, 0x02, 0x03, 0x04, 0x05, 0xFF
HANGAR = Path(sys.executable).parent / "hangar"


@pytest.fixture(scope="module")
def runtime(control: Any) -> dict[str, Any]:
    return deploy(control, "echo", description="shells")


def _url(server: HangarServer, arn: str, shell_id: str | None = None, **query: str) -> str:
    params = {**({"shellId": shell_id} if shell_id else {}), **query}
    suffix = f"?{urlencode(params)}" if params else ""
    return f"ws://127.0.0.1:{server.port}/runtimes/{quote(arn, safe='')}/ws/shells{suffix}"


def _signed(server: HangarServer, url: str, session_id: str) -> dict[str, str]:
    key_id, secret = read_admin_key(server.credentials_file)
    request = AWSRequest(method="GET", url=url.replace("ws://", "http://"), headers={SESSION_HEADER: session_id})
    SigV4Auth(Credentials(key_id, secret), "bedrock-agentcore", "us-west-2").add_auth(request)
    return {k: v for k, v in request.headers.items() if k.lower() != "host"}


class Term:
    """A raw shell client: what came on each channel, read until a pattern shows up on stdout."""

    def __init__(self, ws: ClientConnection) -> None:
        self.ws = ws
        self.out = b""
        self.err = b""
        self.statuses: list[dict[str, Any]] = []

    async def send(self, channel: int, payload: bytes | str = b"") -> None:
        await self.ws.send(bytes([channel]) + (payload.encode() if isinstance(payload, str) else payload))

    async def type(self, text: str) -> None:
        await self.send(STDIN, text)

    async def frame(self, timeout: float = 30.0) -> tuple[int, bytes]:
        raw = await asyncio.wait_for(self.ws.recv(), timeout)
        assert isinstance(raw, bytes) and raw, raw
        channel, payload = raw[0], raw[1:]
        if channel == STDOUT:
            self.out += payload
        elif channel == STDERR:
            self.err += payload
        elif channel == STATUS:
            self.statuses.append(json.loads(payload))
        return channel, payload

    async def until(self, pattern: str, timeout: float = 30.0) -> re.Match[str]:
        deadline = time.monotonic() + timeout
        while not (found := re.search(pattern, self.out.decode(errors="replace"))):
            await self.frame(max(0.1, deadline - time.monotonic()))
        return found

    async def end(self, timeout: float = 30.0) -> dict[str, Any]:
        """Frames until the terminating status (empty metadata); then the server closes."""
        while True:
            channel, _ = await self.frame(timeout)
            if channel == STATUS and not self.statuses[-1]["metadata"]:
                return self.statuses[-1]


async def _open(server: HangarServer, arn: str, session_id: str, shell_id: str) -> tuple[ClientConnection, Term]:
    url = _url(server, arn, shell_id)
    ws = await websockets.connect(url, additional_headers=_signed(server, url, session_id), max_size=None)
    term = Term(ws)
    channel, _ = await term.frame()
    assert channel == STATUS and term.statuses[0]["metadata"]["shellId"] == shell_id, term.statuses
    return ws, term


def test_commands_stdin_resize_heartbeat_and_exit_status(server: HangarServer, runtime: dict[str, Any]) -> None:
    arn, session_id = runtime["agentRuntimeArn"], new_session_id()

    async def talk() -> None:
        url = _url(server, arn, "first")
        async with websockets.connect(url, additional_headers=_signed(server, url, session_id)) as ws:
            assert ws.response is not None
            assert ws.response.headers["X-Amzn-Bedrock-AgentCore-Shell-Id"] == "first"
            assert ws.response.headers[SESSION_HEADER] == session_id
            term = Term(ws)
            await term.frame()
            assert term.statuses == [
                {
                    "kind": "Status",
                    "apiVersion": "v1",
                    "metadata": {"shellId": "first", "reconnected": False},
                    "status": "Success",
                }
            ]
            await term.type("echo $((6*7))-$HANGAR_SANDBOX; tty; stty size\n")
            await term.until(r"42-1\r\n/dev/pts/\d+\r\n24 80\r\n")
            await term.send(RESIZE, json.dumps({"width": 132, "height": 43}))
            await term.type("stty size\n")
            await term.until(r"43 132\r\n")
            await term.type("read line; echo got-$line\n")
            await term.type("typed input\n")
            await term.until(r"got-typed input")
            await term.send(HEARTBEAT)
            while (await term.frame())[0] != HEARTBEAT:
                pass
            await term.type("exit 3\n")
            status = await term.end()
            assert status["status"] == "Failure" and status["reason"] == "NonZeroExitCode"
            assert status["details"]["causes"] == [{"reason": "ExitCode", "message": "3"}]
            with pytest.raises(ConnectionClosed):
                await term.frame()
            assert ws.close_code == 1000

    asyncio.run(talk())


def test_reconnect_replays_what_was_missed_at_most_256_kb_and_a_new_client_takes_over(
    server: HangarServer, runtime: dict[str, Any]
) -> None:
    arn, session_id = runtime["agentRuntimeArn"], new_session_id()

    async def talk() -> None:
        ws, term = await _open(server, arn, session_id, "replay")
        await term.type("cd /tmp && X=kept\n")
        await term.type("sleep 1; echo missed-$X; head -c 400000 /dev/zero | tr '\\0' a; echo; echo END-$X\n")
        await ws.close()  # drops the client, not the shell
        await asyncio.sleep(3)
        ws, term = await _open(server, arn, session_id, "replay")
        assert term.statuses[0]["metadata"]["reconnected"] is True
        await term.until(r"END-kept\r\n")
        replayed = term.out
        assert len(replayed) <= 256 * 1024 + 64, len(replayed)
        assert replayed.count(b"a") > 200 * 1024  # the newest output, cut at the front
        assert b"missed-kept" not in replayed  # older than the last 256 KB
        await term.type("pwd; echo $X\n")
        await term.until(r"/tmp\r\nkept\r\n")  # the same shell: its cwd and variables

        # A second client with the same shell id takes it over; the first is told with close code 4000.
        ws2, term2 = await _open(server, arn, session_id, "replay")
        assert term2.statuses[0]["metadata"]["reconnected"] is True
        with pytest.raises(ConnectionClosed):
            while True:
                await term.frame()
        assert ws.close_code == 4000
        await term2.type("echo still-$X\n")
        await term2.until(r"still-kept")
        await term2.type("exit\n")
        assert (await term2.end())["status"] == "Success"
        await ws2.close()

        # Gone once its end was delivered: the same id is a new shell.
        ws3, term3 = await _open(server, arn, session_id, "replay")
        assert term3.statuses[0]["metadata"]["reconnected"] is False
        await ws3.close()

    asyncio.run(talk())


def test_at_most_ten_shells_per_runtime(server: HangarServer, control: Any) -> None:
    arn = deploy(control, "echo", description="ten shells")["agentRuntimeArn"]
    sessions = [new_session_id(), new_session_id()]

    async def talk() -> None:
        opened = [await _open(server, arn, sessions[i % 2], f"s{i}") for i in range(10)]
        url = _url(server, arn, "eleventh")
        with pytest.raises(InvalidStatus) as refused:
            await websockets.connect(url, additional_headers=_signed(server, url, sessions[0]))
        assert refused.value.response.status_code == 402
        assert refused.value.response.headers["x-amzn-errortype"].startswith("ServiceQuotaExceededException")
        assert b"At most 10 shells" in refused.value.response.body
        # A detached shell still counts; one that exits frees its place.
        await opened[0][0].close()
        with pytest.raises(InvalidStatus):
            await websockets.connect(url, additional_headers=_signed(server, url, sessions[0]))
        await opened[1][1].type("exit\n")
        await opened[1][1].end()
        ws, term = await _open(server, arn, sessions[0], "eleventh")
        await term.type("echo in\n")
        await term.until("in")
        for each, _ in [*opened[2:], (ws, term)]:
            await each.close()

    asyncio.run(talk())


def test_a_shell_ends_with_its_session(server: HangarServer, runtime: dict[str, Any], data: Any) -> None:
    arn, session_id = runtime["agentRuntimeArn"], new_session_id()

    async def talk() -> None:
        ws, term = await _open(server, arn, session_id, "doomed")
        await term.type("sleep 1000 & echo $! > /tmp/pid; echo started\n")
        await term.until("started\r\n")
        await asyncio.to_thread(data.stop_runtime_session, agentRuntimeArn=arn, runtimeSessionId=session_id)
        status = await term.end()
        assert status["status"] == "Failure" and status["reason"] == "InternalError", status
        assert (await term.frame())[0] == CLOSE
        with pytest.raises(ConnectionClosed):
            await term.frame()
        # The same session id is a new session now, with a new shell (no /tmp/pid: a fresh sandbox).
        ws, term = await _open(server, arn, session_id, "doomed")
        assert term.statuses[0]["metadata"]["reconnected"] is False
        await term.type("cat /tmp/pid || echo no-pid\n")
        await term.until("no-pid")
        await ws.close()

    asyncio.run(talk())


def test_ctrl_c_and_the_close_frame_reach_the_shell(server: HangarServer, runtime: dict[str, Any]) -> None:
    arn, session_id = runtime["agentRuntimeArn"], new_session_id()

    async def talk() -> None:
        ws, term = await _open(server, arn, session_id, "signals")
        await term.type("sleep 100\n")
        await asyncio.sleep(0.5)
        await term.type("\x03")  # the pty's line discipline makes it SIGINT for the foreground job
        await term.type("echo after-$?\n")
        await term.until(r"after-130")
        await term.send(CLOSE)  # the client asks the shell to end: SIGHUP, then its status
        status = await term.end()
        assert status["status"] == "Failure"
        causes = status["details"]["causes"]
        assert causes[0]["reason"] == "ExitCode" and {"reason": "Signal", "message": "1"} in causes, causes
        await ws.close()

    asyncio.run(talk())


def test_hostile_frames_and_shell_ids(server: HangarServer, runtime: dict[str, Any]) -> None:
    arn, session_id = runtime["agentRuntimeArn"], new_session_id()

    async def refused_shell_id(shell_id: str) -> int:
        url = _url(server, arn, shell_id)
        with pytest.raises(InvalidStatus) as refused:
            await websockets.connect(url, additional_headers=_signed(server, url, session_id))
        assert refused.value.response.headers["x-amzn-errortype"].startswith("ValidationException")
        return refused.value.response.status_code

    async def closed_with(frame: bytes | str) -> int | None:
        ws, term = await _open(server, arn, session_id, "hostile")
        await ws.send(frame)
        with pytest.raises(ConnectionClosed):
            while True:
                await term.frame()
        return ws.close_code

    async def talk() -> None:
        for bad in ("-leading-dash", "a" * 129, "semi;colon", "new\nline", "dots.in.it"):
            assert await refused_shell_id(bad) == 400
        assert await closed_with("text frame") == 1003
        assert await closed_with(b"") == 1002
        assert await closed_with(bytes([STDIN]) + b"x" * 70000) == 1009
        ws, term = await _open(server, arn, session_id, "hostile")
        assert term.statuses[0]["metadata"]["reconnected"] is True  # none of that ended the shell
        await term.send(0x7E, b"future")
        await term.send(RESIZE, b"not json")
        await term.send(RESIZE, json.dumps({"width": 0, "height": 10}))
        await term.send(STATUS, b"{}")
        await term.type("echo alive\n")
        await term.until("alive")
        assert b"channel 0x7e" in term.err and b"resize frame" in term.err and b"channel 0x03" in term.err
        await ws.close()
        # Unsigned, and signed for another path: refused before the upgrade.
        url = _url(server, arn, "x")
        with pytest.raises(InvalidStatus) as refused:
            await websockets.connect(url)
        assert refused.value.response.status_code == 403
        other = _url(server, arn, "y")
        with pytest.raises(InvalidStatus) as refused:
            await websockets.connect(url, additional_headers=_signed(server, other, session_id))
        assert refused.value.response.status_code == 403

    asyncio.run(talk())


def test_the_sdk_signs_shell_urls_hangar_accepts(server: HangarServer, runtime: dict[str, Any]) -> None:
    """bedrock-agentcore's own URL builders (SigV4 headers, presigned, OAuth subprotocols) and framer against Hangar.
    The SDK only builds URLs for AWS hosts, on wss://: each URL is dialled as is (same Host, path and query, so
    the same signature), over a plain TCP connection to the loopback Hangar instead of TLS to AWS."""
    import boto3
    from bedrock_agentcore.runtime import AgentCoreRuntimeClient
    from bedrock_agentcore.runtime.shell import ShellChannel, ShellFramer

    key_id, secret = read_admin_key(server.credentials_file)
    session = boto3.Session(aws_access_key_id=key_id, aws_secret_access_key=secret, region_name="us-west-2")
    client = AgentCoreRuntimeClient("us-west-2", session=session)
    arn, session_id = runtime["agentRuntimeArn"], new_session_id()
    framer = ShellFramer()

    async def dial(url: str, **kwargs: Any) -> ClientConnection:
        assert url.startswith("wss://bedrock-agentcore.us-west-2.amazonaws.com/"), url
        headers = {k: v for k, v in (kwargs.pop("additional_headers", None) or {}).items() if k.lower() != "host"}
        sock = socket.create_connection(("127.0.0.1", server.port))
        return await websockets.connect(url.replace("wss://", "ws://"), sock=sock, additional_headers=headers, **kwargs)

    async def run(url: str, headers: dict[str, str] | None, shell_id: str) -> tuple[str, int | None]:
        out = b""
        async with await dial(url, additional_headers=headers) as ws:
            assert ws.response is not None and ws.response.headers["X-Amzn-Bedrock-AgentCore-Shell-Id"] == shell_id
            await ws.send(framer.encode_resize(100, 20))
            await ws.send(framer.encode_stdin("stty size; exit 5\n"))
            while True:
                frame = framer.decode(await asyncio.wait_for(ws.recv(), 30))
                if frame.channel == ShellChannel.STDOUT:
                    out += frame.payload
                elif frame.channel == ShellChannel.STATUS and not frame.json()["metadata"]:
                    causes = frame.json()["details"]["causes"]
                    return out.decode(), int(causes[0]["message"])

    url, headers = client.connect_shell(arn, session_id=session_id, shell_id="sdk-sigv4")
    text, code = asyncio.run(run(url, headers, "sdk-sigv4"))
    assert "20 100" in text and code == 5
    presigned = client.connect_shell_presigned(arn, session_id=session_id, shell_id="sdk-presigned", expires=60)
    text, code = asyncio.run(run(presigned, None, "sdk-presigned"))
    assert "20 100" in text and code == 5

    # OAuth rides as a subprotocol: Hangar reads it as the bearer token (this runtime takes SigV4 only, so the
    # token is refused for that reason, which it could only be once read).
    url, protocols = client.connect_shell_oauth(arn, bearer_token="not.a.jwt", session_id=session_id)

    async def oauth() -> InvalidStatus:
        with pytest.raises(InvalidStatus) as refused:
            await dial(url, subprotocols=protocols)
        return refused.value

    refused = asyncio.run(oauth())
    assert refused.response.status_code == 403 and b"SigV4-signed requests only" in refused.response.body


class Tmux:
    """A private tmux server (its own socket) running one window; killed with everything in it at the end."""

    def __init__(self, name: str) -> None:
        self.base = ["tmux", "-L", name]

    def __call__(self, *args: str) -> str:
        return subprocess.run([*self.base, *args], check=True, capture_output=True, text=True).stdout

    def screen(self) -> str:
        return self("capture-pane", "-p", "-J", "-S", "-200")

    def wait(self, pattern: str, timeout: float = 60.0) -> re.Match[str]:
        try:
            return wait_for(lambda: re.search(pattern, self.screen()), timeout=timeout, interval=0.1)
        except AssertionError:
            raise AssertionError(f"{pattern!r} not on the screen:\n{self.screen()}") from None

    def type(self, text: str) -> None:
        self("send-keys", "-l", text)
        self("send-keys", "Enter")


@pytest.fixture
def tmux() -> Iterator[Tmux]:
    if shutil.which("tmux") is None:
        pytest.skip("tmux is not installed (bash scripts/system-deps test installs it)")
    mux = Tmux(f"hangar-test-{uuid.uuid4().hex[:8]}")
    try:
        yield mux
    finally:
        subprocess.run([*mux.base, "kill-server"], capture_output=True)


def test_hangar_shell_is_a_real_terminal(server: HangarServer, runtime: dict[str, Any], tmux: Tmux) -> None:
    session_id = new_session_id()
    env = {"HANGAR_ENDPOINT_URL": server.url, "HANGAR_DATA_DIR": str(server.data_dir)}
    command = " ".join(
        [
            *(f"{k}={v}" for k, v in env.items()),
            str(HANGAR),
            "shell",
            runtime["agentRuntimeName"],
            "--session-id",
            session_id,
            "--shell-id",
            "tmux",
            "; echo CLI-EXIT=$?; sleep 600",
        ]
    )
    tmux("new-session", "-d", "-x", "120", "-y", "40", "-e", f"PATH={os.environ['PATH']}", command)
    tmux.wait(r"\$")  # the remote prompt
    tmux.type("echo hello-$((40+2))")
    tmux.wait(r"hello-42")
    tmux.type("stty size")
    tmux.wait(r"\n40 120\s*\n")  # the window's size, sent at start
    tmux("resize-window", "-x", "100", "-y", "30")
    tmux.type("stty size")
    tmux.wait(r"\n30 100\s*\n")  # SIGWINCH became a resize frame
    tmux.type("sleep 100")
    time.sleep(0.5)
    tmux("send-keys", "C-c")  # raw mode: ^C is a byte for the remote pty, which interrupts its foreground job
    tmux.type("echo interrupted-$?")
    tmux.wait(r"interrupted-130")
    tmux.type("exit 3")
    tmux.wait(r"CLI-EXIT=3")


def test_an_attached_shell_keeps_its_session_and_a_detached_one_is_reaped_with_it(
    server: HangarServer, control: Any
) -> None:
    # 60 s idle timeout on the wire is 1.2 s on this server (TIME_SCALE).
    runtime = deploy(control, "echo", lifecycleConfiguration={"idleRuntimeSessionTimeout": 60})
    arn, runtime_id, session_id = runtime["agentRuntimeArn"], runtime["agentRuntimeId"], new_session_id()

    async def talk() -> None:
        ws, term = await _open(server, arn, session_id, "idle")
        await asyncio.sleep(4)  # quiet, but attached: Active, never reaped
        assert session_state(server, runtime_id, session_id) == "Active"
        await term.type("echo $$ > /tmp/shell-pid; echo still-here\n")
        await term.until("still-here")
        await ws.close()
        await asyncio.to_thread(wait_for, lambda: session_state(server, runtime_id, session_id) == "Terminated", 30)
        ws, term = await _open(server, arn, session_id, "idle")
        assert term.statuses[0]["metadata"]["reconnected"] is False  # the old shell went with its session
        await term.type("cat /tmp/shell-pid 2>/dev/null || echo fresh-sandbox\n")
        await term.until("fresh-sandbox")
        await ws.close()

    asyncio.run(talk())


def test_hangar_shell_reads_a_script_from_a_pipe(server: HangarServer, runtime: dict[str, Any]) -> None:
    env = {**os.environ, "HANGAR_ENDPOINT_URL": server.url, "HANGAR_DATA_DIR": str(server.data_dir)}
    argv = [str(HANGAR), "shell", runtime["agentRuntimeId"], "--session-id", new_session_id()]
    script = subprocess.run(argv, input=b"echo piped-$((2+3))\nexit 4\n", env=env, capture_output=True, timeout=120)
    assert script.returncode == 4, script
    assert b"piped-5" in script.stdout
    # No exit in the script: the end of input is the end-of-file key, which ends the shell (status 0).
    ended = subprocess.run([*argv[:-1], new_session_id()], input=b"true\n", env=env, capture_output=True, timeout=120)
    assert ended.returncode == 0, ended
