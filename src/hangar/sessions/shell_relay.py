"""The shell WebSocket protocol between one client and one shell of ``sessions/shells.py``.

Shared by the two places that own a shell's registry: the gateway of a single server
(``gateway/dataplane/shells.py``) and a cluster node (``cluster/node_shells.py``, reached through a gateway that only
relays the frames). Binary messages are ``[channel byte][payload]`` (Kubernetes ``v5.channel.k8s.io`` style, as the
bedrock-agentcore SDK's ``runtime/shell/protocol.py`` speaks it): 0 stdin, 1 stdout, 2 stderr (Hangar's own
notices), 3 status (``metav1.Status`` JSON), 4 resize ``{"width","height"}``, 5 heartbeat (echoed), 0xFF close
(client: end the shell; server: the session ended).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import uuid
from typing import TypeGuard

from starlette.websockets import WebSocket

from hangar.domain.errors import ValidationError
from hangar.sessions.shells import Attachment, ShellRegistry

MAX_FRAME = 64 * 1024  # channel byte included, as the SDK's framer enforces
CHUNK = MAX_FRAME - 1
DEFAULT_SIZE = (80, 24)
STDIN, STDOUT, STDERR, STATUS, RESIZE, HEARTBEAT, CLOSE = 0x00, 0x01, 0x02, 0x03, 0x04, 0x05, 0xFF
KICKED = 4000  # the SDK's close code for "another client attached to this shell"
_SHELL_ID = re.compile(r"[a-zA-Z0-9][a-zA-Z0-9_-]{0,127}")


def shell_id_of(value: str | None) -> str:
    """The client's shell id (checked), or a new one when it named none."""
    if value is None or value == "":
        return str(uuid.uuid4())
    if not _SHELL_ID.fullmatch(value):
        raise ValidationError("shellId must be 1 to 128 characters: a letter or digit, then letters, digits, - or _")
    return value


def status_of(exit_code: int | None, signum: int | None) -> dict[str, object]:
    """The ``metav1.Status`` that ends a shell, as Kubernetes' exec (and AgentCore) word it."""
    base: dict[str, object] = {"kind": "Status", "apiVersion": "v1", "metadata": {}}
    if exit_code is None:
        message = "the runtime session ended, and its shells with it"
        return {**base, "status": "Failure", "reason": "InternalError", "message": message, "code": 500}
    if exit_code == 0:
        return {**base, "status": "Success"}
    causes = [{"reason": "ExitCode", "message": str(exit_code)}]
    if signum is not None:
        causes.append({"reason": "Signal", "message": str(signum)})
    message = f"command terminated with exit code {exit_code}"
    return {**base, "status": "Failure", "reason": "NonZeroExitCode", "message": message, "details": {"causes": causes}}


class ShellRelay:
    """One attached client: the shell's output (after what it missed) down, its frames up, until either ends."""

    def __init__(self, websocket: WebSocket, registry: ShellRegistry, attachment: Attachment) -> None:
        self.websocket = websocket
        self.registry = registry
        self.attachment = attachment
        self.shell = attachment.shell
        self._send_lock = asyncio.Lock()

    async def send(self, channel: int, payload: bytes = b"") -> None:
        async with self._send_lock:
            await self.websocket.send_bytes(bytes([channel]) + payload)

    async def close(self, code: int, reason: str = "") -> None:
        async with self._send_lock:
            with contextlib.suppress(RuntimeError):
                await self.websocket.close(code=code, reason=reason)

    async def run(self, reconnected: bool) -> None:
        metadata = {"shellId": self.shell.shell_id, "reconnected": reconnected}
        confirmation = {"kind": "Status", "apiVersion": "v1", "metadata": metadata, "status": "Success"}
        await self.send(STATUS, json.dumps(confirmation).encode())
        down = asyncio.create_task(self._down(self.shell.delivered if reconnected else 0))
        up = asyncio.create_task(self._up())
        try:
            await asyncio.wait({down, up}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in (down, up):
                task.cancel()
            await asyncio.gather(down, up, return_exceptions=True)

    async def _down(self, offset: int) -> None:
        shell = self.shell
        errors_sent = 0
        while True:
            changed = shell.changed()
            if shell.attached is not self.attachment:
                await self.close(KICKED, "another client attached to this shell")
                return
            for error in shell.errors[errors_sent:]:
                await self.send(STDERR, error)
                errors_sent += 1
            data, end = shell.output_since(offset)
            if data:
                for at in range(0, len(data), CHUNK):
                    await self.send(STDOUT, data[at : at + CHUNK])
                offset = end
                shell.acknowledge(self.attachment, end)
                continue
            if shell.end is not None:
                await self.send(STATUS, json.dumps(status_of(shell.end.exit_code, shell.end.signal)).encode())
                if shell.end.exit_code is None:
                    await self.send(CLOSE)  # platform-initiated: the session is gone
                self.registry.finished(shell)
                await self.close(1000)
                return
            await changed.wait()

    async def _up(self) -> None:
        while True:
            message = await self.websocket.receive()
            if message["type"] == "websocket.disconnect":
                return  # the shell stays: the same shell id attaches to it again
            data = message.get("bytes")
            if data is None:
                await self.close(1003, "shell frames are binary: [channel byte][payload]")
                return
            if not data:
                await self.close(1002, "empty frame: a shell frame starts with its channel byte")
                return
            if len(data) > MAX_FRAME:
                await self.close(1009, f"frames are at most {MAX_FRAME} bytes; split large input")
                return
            await self._frame(data[0], data[1:])

    async def _frame(self, channel: int, payload: bytes) -> None:
        if channel == STDIN:
            if payload:
                await self.shell.input(payload)
        elif channel == RESIZE:
            size = _size(payload)
            if size is None:
                await self.send(STDERR, b'hangar: a resize frame is {"width": N, "height": N} (1 to 65535)\r\n')
            else:
                await self.shell.resize(*size)
        elif channel == HEARTBEAT:
            await self.send(HEARTBEAT)
        elif channel == CLOSE:
            await self.shell.terminate()  # its end (status frame) follows on the way down
        else:
            await self.send(STDERR, f"hangar: ignored a frame on channel 0x{channel:02x}\r\n".encode())


def _size(payload: bytes) -> tuple[int, int] | None:
    try:
        doc = json.loads(payload)
    except ValueError:
        return None
    if not isinstance(doc, dict):
        return None
    width, height = doc.get("width", doc.get("Width")), doc.get("height", doc.get("Height"))
    if _dimension(width) and _dimension(height):
        return width, height
    return None


def _dimension(value: object) -> TypeGuard[int]:
    """A terminal size in cells: an int (not a bool) from 1 to 65535."""
    return isinstance(value, int) and not isinstance(value, bool) and 1 <= value <= 65535
