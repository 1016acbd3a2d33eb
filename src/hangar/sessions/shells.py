"""Interactive shells of live sessions (InvokeAgentRuntimeCommandShell): shell id → pty, output kept for replay.

A shell lives in its session's sandbox (``Sandbox.open_shell``); this registry keeps, per shell, the host's end of
the pty, the last ``REPLAY_BYTES`` of its output, and which WebSocket (if any) is attached. A WebSocket that drops
leaves the shell running; attaching again with the same session and shell id replays what the last client did
not get (at most ``REPLAY_BYTES``), then streams on. A new attachment to a shell that has one takes it over (the
old one is told it was kicked). A shell ends when its process exits, when its session ends (the sandbox stops,
and the pty with it), or when Hangar stops; it never outlives its session. At most ``MAX_SHELLS_PER_RUNTIME``
shells run per runtime.
"""

from __future__ import annotations

import asyncio
import logging
import weakref
from dataclasses import dataclass

from hangar.domain.errors import RuntimeClientError, ServiceQuotaExceededError
from hangar.sandbox.shell import ShellEvent, ShellProcess
from hangar.sessions.session import Session

log = logging.getLogger("hangar.sessions")

REPLAY_BYTES = 256 * 1024
MAX_SHELLS_PER_RUNTIME = 10
# While a client is attached, output waits for it once it lags this far behind (so none is ever lost while a
# client reads); while none is, the shell runs freely and only the last REPLAY_BYTES are kept.
LAG_LIMIT = 128 * 1024


@dataclass(frozen=True)
class Attachment:
    """One client's hold on a shell; ``shell.attached is not self`` once another client took it over."""

    shell: Shell


class Shell:
    """One shell: its pty, its recent output (absolute byte offsets) and its end, once known."""

    def __init__(self, registry: ShellRegistry, session: Session, shell_id: str, process: ShellProcess) -> None:
        self.registry = registry
        self.session = session
        self.shell_id = shell_id
        self.process = process
        self.buffer = bytearray()
        self.start = 0  # absolute offset of buffer[0]
        self.delivered = 0  # absolute offset up to which some client received the output
        self.errors: list[bytes] = []  # why the shell could not start (the supervisor's own words)
        self.end: ShellEvent | None = None  # the exit event; an exit without a code: the sandbox went away
        self.attached: Attachment | None = None
        self._changed = asyncio.Event()
        self._pump = asyncio.create_task(self._read(), name=f"shell-{shell_id}")

    @property
    def written(self) -> int:
        """Absolute offset just past the newest output."""
        return self.start + len(self.buffer)

    @property
    def live(self) -> bool:
        return self.end is None

    def changed(self) -> asyncio.Event:
        """An event set at the next change (output, exit, attach or detach); take it before looking at the state."""
        return self._changed

    def _notify(self) -> None:
        self._changed.set()
        self._changed = asyncio.Event()

    def output_since(self, offset: int) -> tuple[bytes, int]:
        """Output from ``offset`` on (from the oldest kept byte when ``offset`` is older) and where it ends."""
        begin = max(offset, self.start)
        return bytes(self.buffer[begin - self.start :]), self.written

    def acknowledge(self, attachment: Attachment, offset: int) -> None:
        """``attachment``'s client received the output up to ``offset``."""
        if self.attached is attachment and offset > self.delivered:
            self.delivered = offset
            self._notify()

    async def _read(self) -> None:
        try:
            while (event := await self.process.read()) is not None:
                if event.kind == "exit":
                    # Killed because its session is ending: that, not the SIGKILL, is what the client must learn.
                    self.end = event if self.session.ended_at is None else ShellEvent(kind="exit")
                    return
                if event.kind == "error":
                    self.errors.append(event.data)
                    self._notify()
                    continue
                self.buffer += event.data
                if len(self.buffer) > REPLAY_BYTES:
                    cut = len(self.buffer) - REPLAY_BYTES
                    del self.buffer[:cut]
                    self.start += cut
                self._notify()
                while self.attached is not None and self.written - self.delivered > LAG_LIMIT:
                    await self._changed.wait()
            self.end = ShellEvent(kind="exit")  # no exit status: the sandbox (the session) ended under it
        except Exception:
            log.exception("shell %s failed", self.shell_id)
            self.end = ShellEvent(kind="exit")
        finally:
            self._notify()
            await self.process.close()
            self.registry._ended(self)

    async def terminate(self) -> None:
        """Hang up the pty (the client asked to end the shell); the exit status follows as usual."""
        await self.process.hangup()

    async def input(self, data: bytes) -> None:
        await self.process.write(data)

    async def resize(self, cols: int, rows: int) -> None:
        await self.process.resize(cols, rows)


class ShellRegistry:
    """The shells of one session manager's sessions, by (runtime id, session id, shell id)."""

    def __init__(self) -> None:
        self.shells: dict[tuple[str, str, str], Shell] = {}
        self._opening: set[tuple[str, str, str]] = set()

    def live_count(self, runtime_id: str) -> int:
        opening = sum(1 for key in self._opening if key[0] == runtime_id)
        return opening + sum(1 for key, shell in self.shells.items() if key[0] == runtime_id and shell.live)

    async def attach(self, session: Session, shell_id: str, cols: int, rows: int) -> tuple[Attachment, bool]:
        """Attach to the session's shell ``shell_id``, starting it (``cols`` x ``rows``) if it does not run; True
        when it already ran (a reconnect: the caller replays from ``shell.delivered``)."""
        self._sweep()
        key = (session.key.runtime_id, session.key.session_id, shell_id)
        shell = self.shells.get(key)
        if shell is not None and (shell.session is not session or not shell.live):
            self.shells.pop(key, None)  # a shell of an earlier session with this id, or one that ended
            shell = None
        reconnected = shell is not None
        if shell is None:
            if key in self._opening:
                raise RuntimeClientError(f"Shell {shell_id} is being started by another connection; retry")
            if self.live_count(session.key.runtime_id) >= MAX_SHELLS_PER_RUNTIME:
                raise ServiceQuotaExceededError(
                    f"At most {MAX_SHELLS_PER_RUNTIME} shells may run per agent runtime; exit or end one first"
                )
            self._opening.add(key)
            try:
                process = await self._open(session, cols, rows)
            finally:
                self._opening.discard(key)
            if session.ended_at is not None:
                await process.close()
                raise RuntimeClientError("The runtime session ended while its shell was starting")
            shell = self.shells[key] = Shell(self, session, shell_id, process)
        attachment = Attachment(shell)
        shell.attached = attachment
        shell._notify()  # a client still attached learns it was taken over
        return attachment, reconnected

    async def _open(self, session: Session, cols: int, rows: int) -> ShellProcess:
        try:
            return await session.sandbox.open_shell(cols, rows)
        except NotImplementedError as exc:
            raise RuntimeClientError(f"This runtime's sandbox has no interactive shells ({exc})") from exc

    def detach(self, attachment: Attachment) -> None:
        shell = attachment.shell
        if shell.attached is attachment:
            shell.attached = None
            shell._notify()

    def finished(self, shell: Shell) -> None:
        """A client received the shell's end: nobody can attach to it any more."""
        key = (shell.session.key.runtime_id, shell.session.key.session_id, shell.shell_id)
        if self.shells.get(key) is shell:
            del self.shells[key]

    def _ended(self, shell: Shell) -> None:
        """The shell's process is gone. Kept until a client gets its end, unless its session is over; at most
        ``MAX_SHELLS_PER_RUNTIME`` such ends per runtime are kept (the oldest go first)."""
        if shell.session.ended_at is not None:
            self.finished(shell)
            return
        runtime_id = shell.session.key.runtime_id
        ended = [key for key, kept in self.shells.items() if key[0] == runtime_id and not kept.live]
        for key in ended[: max(0, len(ended) - MAX_SHELLS_PER_RUNTIME)]:
            del self.shells[key]

    def _sweep(self) -> None:
        """Forget ended shells of ended sessions (their end can no longer reach anybody)."""
        for key, shell in list(self.shells.items()):
            if not shell.live and shell.session.ended_at is not None:
                del self.shells[key]


_REGISTRIES: weakref.WeakKeyDictionary[object, ShellRegistry] = weakref.WeakKeyDictionary()


def shells_of(manager: object) -> ShellRegistry:
    """The shell registry of a session manager (one per manager, created on first use)."""
    registry = _REGISTRIES.get(manager)
    if registry is None:
        registry = _REGISTRIES[manager] = ShellRegistry()
    return registry
