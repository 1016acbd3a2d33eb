"""``hangar shell``: an interactive terminal in a running session (InvokeAgentRuntimeCommandShell).

The local terminal goes to raw mode, so every key (Ctrl-C, Ctrl-Z, Ctrl-D, arrows) reaches the remote pty as typed
and the remote line discipline does the rest; the window size is sent at start and on every SIGWINCH. The remote
shell's exit status becomes this command's. A dropped connection leaves the shell running: ``--shell-id`` with
the same session id attaches to it again and shows what was missed (up to 256 KB).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import sys
import termios
import tty
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlencode

import botocore.session
import typer
import websockets
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials
from websockets.asyncio.client import ClientConnection
from websockets.exceptions import ConnectionClosed, InvalidStatus

from hangar.cli.client import DATA_DIR, ENDPOINT_URL, REGION, Hangar, aws_errors, connect, fail
from hangar.cli.dataplane import runtime_arn

SESSION_HEADER = "X-Amzn-Bedrock-AgentCore-Runtime-Session-Id"
STDIN, STDOUT, STDERR, STATUS, RESIZE, HEARTBEAT, CLOSE = 0x00, 0x01, 0x02, 0x03, 0x04, 0x05, 0xFF
READ_SIZE = 32 * 1024  # well under the 64 KiB frame limit
KICKED = 4000
FIRST_OUTPUT_WAIT_S = 5.0


def register(app: typer.Typer) -> None:
    app.command("shell")(shell)


def shell(
    runtime: str = typer.Argument(..., help="Runtime name, id or ARN."),
    session_id: str = typer.Option(..., "--session-id", "-s", help="Runtime session id (33-256 chars)."),
    qualifier: str | None = typer.Option(None, "--qualifier", "-q", help="Endpoint (DEFAULT when not given)."),
    shell_id: str | None = typer.Option(None, "--shell-id", help="Attach to this shell (or start it under this id)."),
    endpoint_url: str = ENDPOINT_URL,
    data_dir: Path | None = DATA_DIR,
    region: str | None = REGION,
) -> None:
    """Open an interactive shell in a session's sandbox; exits with the shell's exit status."""
    hangar = connect(endpoint_url, data_dir, region)
    with aws_errors():
        arn = runtime_arn(hangar, runtime)
    query = {**({"qualifier": qualifier} if qualifier else {}), **({"shellId": shell_id} if shell_id else {})}
    path = f"/runtimes/{quote(arn, safe='')}/ws/shells" + (f"?{urlencode(query)}" if query else "")
    http_url = f"{hangar.endpoint_url}{path}"
    headers = _signed(hangar, http_url, session_id)
    ws_url = "ws" + http_url.removeprefix("http")  # http → ws, https → wss
    raise typer.Exit(asyncio.run(_Terminal(ws_url, headers).run()))


def _signed(hangar: Hangar, url: str, session_id: str) -> dict[str, str]:
    """SigV4 headers for the upgrade request (the session id header signed with them)."""
    if hangar.credentials is not None:
        credentials = Credentials(*hangar.credentials)
    else:
        credentials = botocore.session.get_session().get_credentials()
    if credentials is None:
        fail("no credentials: pass --data-dir (the server's key file) or configure AWS credentials")
    request = AWSRequest(method="GET", url=url, headers={SESSION_HEADER: session_id})
    SigV4Auth(credentials, "bedrock-agentcore", hangar.region).add_auth(request)
    return {k: v for k, v in request.headers.items() if k.lower() != "host"}


class _Terminal:
    def __init__(self, url: str, headers: dict[str, str]) -> None:
        self.url = url
        self.headers = headers
        self.stdin = sys.stdin.fileno()
        self.stdout = sys.stdout.fileno()
        self.tty = os.isatty(self.stdin)
        self.shell_id = ""
        self.exit_code: int | None = None
        self.message = ""
        self.spoke = asyncio.Event()  # the shell's first output came

    async def run(self) -> int:
        try:
            ws = await websockets.connect(self.url, additional_headers=self.headers, max_size=None)
        except InvalidStatus as exc:
            fail(f"the shell was refused: {_error_text(exc)}")
        except OSError as exc:
            fail(f"cannot connect to {self.url}: {exc}")
        saved = termios.tcgetattr(self.stdin) if self.tty else None
        try:
            if saved is not None:
                tty.setraw(self.stdin, termios.TCSANOW)  # keeps what was typed ahead: it goes to the shell
            await self._attached(ws)
        finally:
            if saved is not None:
                termios.tcsetattr(self.stdin, termios.TCSADRAIN, saved)
            await ws.close()
        if self.message:
            print(f"\r\nhangar shell: {self.message}", file=sys.stderr)
        return self.exit_code if self.exit_code is not None else 1

    async def _attached(self, ws: ClientConnection) -> None:
        loop = asyncio.get_running_loop()
        await self._resize(ws)
        if self.tty:
            loop.add_signal_handler(signal.SIGWINCH, lambda: loop.create_task(self._resize(ws)))
        typed: asyncio.Queue[bytes] = asyncio.Queue()

        def readable() -> None:
            data = _read(self.stdin)
            if not data:  # end of input (a pipe or file): the terminal's end-of-file key, as typed
                loop.remove_reader(self.stdin)
                typed.put_nowait(b"\x04")
            typed.put_nowait(data)

        loop.add_reader(self.stdin, readable)
        sender = asyncio.create_task(self._send_typed(ws, typed))
        try:
            await self._receive(ws)
        finally:
            loop.remove_reader(self.stdin)
            if self.tty:
                loop.remove_signal_handler(signal.SIGWINCH)
            sender.cancel()
            await asyncio.gather(sender, return_exceptions=True)

    async def _resize(self, ws: ClientConnection) -> None:
        if not self.tty:
            return
        with contextlib.suppress(OSError, ConnectionClosed):
            size = os.get_terminal_size(self.stdout if os.isatty(self.stdout) else self.stdin)
            await ws.send(bytes([RESIZE]) + json.dumps({"width": size.columns, "height": size.lines}).encode())

    async def _send_typed(self, ws: ClientConnection, typed: asyncio.Queue[bytes]) -> None:
        # Input waits for the shell's first output (its prompt): typed earlier, it would meet the pty's line
        # discipline before the shell's line editor set it up, and an end-of-file key there would be lost.
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.spoke.wait(), FIRST_OUTPUT_WAIT_S)
        with contextlib.suppress(ConnectionClosed):
            while data := await typed.get():
                await ws.send(bytes([STDIN]) + data)

    async def _receive(self, ws: ClientConnection) -> None:
        try:
            async for message in ws:
                if not isinstance(message, bytes) or not message:
                    continue
                channel, payload = message[0], message[1:]
                if channel == STDOUT:
                    self.spoke.set()
                    _write_all(self.stdout, payload)
                elif channel == STDERR:
                    _write_all(sys.stderr.fileno(), payload)
                elif channel == STATUS and self._status(json.loads(payload)):
                    return
                elif channel == CLOSE:
                    self.message = self.message or "the session ended"
                    return
        except ConnectionClosed:
            pass
        if ws.close_code == KICKED:
            self.message = "another client attached to this shell"
        elif self.exit_code is None and not self.message:
            self.message = f"connection lost; reattach with --shell-id {self.shell_id}"

    def _status(self, status: dict[str, Any]) -> bool:
        """True when the status ends the shell (sets the exit code)."""
        metadata = status.get("metadata") or {}
        if metadata.get("shellId"):
            self.shell_id = str(metadata["shellId"])
            return False
        if status.get("status") == "Success":
            self.exit_code = 0
            return True
        causes = (status.get("details") or {}).get("causes") or []
        code = next((c.get("message") for c in causes if c.get("reason") == "ExitCode"), None)
        if code is not None and str(code).isdigit():
            self.exit_code = int(code)
        else:
            self.message = str(status.get("message") or "the shell ended")
        return True


def _read(fd: int) -> bytes:
    try:
        return os.read(fd, READ_SIZE)
    except OSError:
        return b""


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        try:
            view = view[os.write(fd, view) :]
        except BlockingIOError:
            continue


def _error_text(exc: InvalidStatus) -> str:
    response = exc.response
    try:
        message = json.loads(bytes(response.body or b"")).get("message", "")
    except ValueError:
        message = bytes(response.body or b"").decode(errors="replace")
    kind = response.headers.get("x-amzn-errortype", "").split(":")[0]
    return f"{response.status_code} {kind}: {message}".strip()
