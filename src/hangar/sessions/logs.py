"""Session logs, wired to the session manager: a session's output is followed from its start to its sandbox's stop.

The store and the poller live in ``observability/`` (no settings there); this module builds them from the settings
and speaks in sessions, so the manager needs one line at a start and one at an end.
"""

from __future__ import annotations

from hangar.config import Settings
from hangar.observability.log_capture import LogCapture
from hangar.observability.logs import LogStore
from hangar.sessions.session import Session


class SessionLogs:
    """The log store of one installation and the capture feeding it."""

    def __init__(self, settings: Settings) -> None:
        self.store = LogStore(
            settings.data_dir / "logs", settings.session_log_bytes, settings.runtime_log_bytes, settings.log_retention_s
        )
        self.capture = LogCapture(self.store)

    def begin(self, session: Session) -> None:
        """Follow the session's output into its stream (its runtime endpoint's group)."""
        path = getattr(session.sandbox, "log_path", None)
        if path is None:
            return  # a backend whose sandboxes keep no output file
        target = session.target
        self.capture.begin(session, path, target.runtime_id, target.endpoint_name, session.key.session_id)

    async def end(self, session: Session) -> None:
        """Before the sandbox stops: read the rest of its output (the file goes with the sandbox)."""
        await self.capture.end(session)

    async def stop(self) -> None:
        await self.capture.stop()
