"""A small mount namespace to launch cold sandboxes from, so that a cold start does not slow down as sessions grow.

bwrap copies its launcher's whole mount table into the sandbox's new mount namespace, reads it once per bind and
detaches it at the end: ~0.25 ms per host mount, and every live sandbox adds two (its tmpfs and its network
namespace file): 17 ms with 22 mounts, 111 ms with 740, 502 ms with 2,025. A long-lived holder
(``launch_holder.py``) keeps a private copy of the host's mount namespace without any sandbox's mounts; a cold
launcher enters it (``nsenter --mount``, read from the gate: ``launcher.GATED_ENTER``) after its state dir was
attached there, and the state dir is detached again once the supervisor runs (bwrap's copy holds what it needs).

Isolation is unchanged: bwrap builds the same root view from the same sources (each source is checked to be the
same file in the launch namespace as on the host, else the launch uses the host's namespace as before), and the
launch namespace is private, so nothing the host mounts later propagates into a sandbox.
"""

from __future__ import annotations

import array
import json
import logging
import os
import socket
import subprocess
import sys
import threading
from collections.abc import Sequence
from pathlib import Path

from hangar.sandbox.namespace import image_root
from hangar.sandbox.namespace.rootfs import _libc

log = logging.getLogger(__name__)
HOLDER = Path(__file__).with_name("launch_holder.py")
HOST_NS = "/proc/self/ns/mnt"  # the launcher's own: entering it changes nothing (no holder, or a source differs)
SOURCE_OPTIONS = {"--bind", "--ro-bind", "--dev-bind", "--bind-try", "--ro-bind-try", "--dev-bind-try"}
START_TIMEOUT_S = 10.0
REPLY_TIMEOUT_S = 10.0
MAX_MISSES = 3


def bind_sources(arguments: bytes) -> list[str]:
    """The host paths bwrap binds, from its NUL-separated arguments (each source is followed by its destination)."""
    args = arguments.split(b"\0")
    return [args[i + 1].decode() for i, arg in enumerate(args[:-1]) if arg.decode() in SOURCE_OPTIONS]


class _Holder:
    """One holder process and the state dirs attached in its namespace (launches between ``enter`` and ``leave``)."""

    def __init__(self, prune: Sequence[str]) -> None:
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        try:
            ours.settimeout(START_TIMEOUT_S)
            # SAFETY: root runs Hangar's own stdlib-only holder; it only unshares its mount namespace, detaches
            # sandbox mounts from that copy, and attaches/detaches state dirs this process sends it.
            self.proc = subprocess.Popen(
                [sys.executable, "-I", "-S", str(HOLDER), str(theirs.fileno()), *prune],
                stdin=subprocess.DEVNULL,
                pass_fds=(theirs.fileno(),),
                cwd="/",
                start_new_session=True,
            )
        except BaseException:
            ours.close()
            raise
        finally:
            theirs.close()
        self.sock = ours
        self.attached: set[str] = set()
        try:
            ready = json.loads(ours.recv(65536) or b"{}")
            if "ready" not in ready:
                raise OSError(0, "the launch namespace's holder did not start")
        except BaseException:
            self.close()
            raise
        ours.settimeout(REPLY_TIMEOUT_S)

    def alive(self) -> bool:
        return self.proc.poll() is None

    def ask(self, request: dict[str, object], fd: int | None = None) -> dict[str, object]:
        fds = [] if fd is None else [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", [fd]))]
        self.sock.sendmsg([json.dumps(request).encode()], fds)
        data = self.sock.recv(65536)
        if not data:
            raise OSError(0, "the launch namespace's holder exited")
        reply: dict[str, object] = json.loads(data)
        return reply

    def close(self) -> None:
        self.sock.close()  # the holder reads EOF and exits
        self.proc.kill()
        self.proc.wait()


class LaunchNamespace:
    """The holder of one backend, started on first use; ``enter`` and ``leave`` bracket one cold launch. A holder
    that must be replaced (a source it lacks, an error) is retired: it runs on until its in-flight launches left."""

    def __init__(self, prune: Sequence[Path]) -> None:
        self.prune = [str(p) for p in prune]
        self._lock = threading.Lock()
        self._current: _Holder | None = None
        self._holders: dict[str, _Holder] = {}  # state dir -> the holder it is attached in
        self._failed = False  # the holder cannot run here (an old kernel, say): every launch uses the host's
        self._misses = 0  # launches in a row that could not use it

    def enter(self, state_path: Path, arguments: bytes) -> str:
        """Attach ``state_path`` (with its submounts) in the launch namespace and return the path of that namespace
        for the launcher's gate; or ``HOST_NS`` when it cannot be used for this launch (nothing to undo then)."""
        if self._failed:
            return HOST_NS
        path = str(state_path)
        sources = bind_sources(arguments)
        expected = [_identity(source) for source in sources]
        with self._lock:
            holder = self._started()
            if holder is None:
                return HOST_NS
            try:
                flags = image_root.OPEN_TREE_CLONE | image_root.OPEN_TREE_CLOEXEC | image_root.AT_RECURSIVE
                tree = image_root._check(
                    _libc().syscall(image_root.SYS_OPEN_TREE, image_root.AT_FDCWD, path.encode(), flags),
                    f"open_tree {path}",
                )
                try:
                    reply = holder.ask({"op": "enter", "path": path, "check": sources}, tree)
                finally:
                    os.close(tree)
            except (OSError, ValueError) as exc:  # ValueError: an answer that is not JSON
                reply = {"error": str(exc)}
            stats = reply.get("stats")
            seen = [tuple(s) if s else None for s in stats] if isinstance(stats, list) else None
            if seen is not None:
                holder.attached.add(path)
                self._holders[path] = holder
            if seen == expected:
                self._misses = 0
                return f"/proc/{holder.proc.pid}/ns/mnt"
            # A mount made after the holder started (a fresh copy has it), or a holder gone wrong: start afresh.
            why = reply.get("error") or [s for s, a, b in zip(sources, expected, seen or [], strict=False) if a != b]
            log.info("launching %s from the host's mount namespace: %s", state_path.name, why)
            self._retire(holder)
            self._misses += 1
            if self._misses >= MAX_MISSES:
                log.warning("cold launches use the host's mount namespace: %d launches in a row could not", MAX_MISSES)
                self._failed = True
        self.leave(state_path)
        return HOST_NS

    def leave(self, state_path: Path) -> None:
        """Detach the state dir from the launch namespace (bwrap's copy keeps what the sandbox binds)."""
        path = str(state_path)
        with self._lock:
            holder = self._holders.pop(path, None)
            if holder is None:
                return
            holder.attached.discard(path)
            try:
                if holder.alive():
                    holder.ask({"op": "leave", "path": path})
            except (OSError, ValueError) as exc:
                log.warning("could not detach %s from the launch namespace: %s", state_path, exc)
                self._retire(holder)
            if holder is not self._current and not holder.attached:
                holder.close()

    def ensure(self) -> None:
        """Start the holder now (from a thread: off the event loop), so that a cold launch does not wait for it."""
        if not self._failed:
            with self._lock:
                self._started()

    @property
    def settled(self) -> bool:
        """The holder runs, or cannot run here: ``ensure`` has nothing to do."""
        return self._failed or self.holder_pid is not None

    @property
    def holder_pid(self) -> int | None:
        """The current holder's pid while it runs (its ``/proc/PID/ns/mnt`` is the launch namespace)."""
        holder = self._current
        return holder.proc.pid if holder is not None and holder.alive() else None

    def close(self) -> None:
        """End every holder (the backend is gone)."""
        with self._lock:
            for holder in {*self._holders.values(), *((self._current,) if self._current else ())}:
                holder.close()
            self._holders.clear()
            self._current = None

    def _started(self) -> _Holder | None:
        """The running holder, started if need be (under the lock); None if it cannot run here."""
        if self._current is not None and self._current.alive():
            return self._current
        if self._current is not None:
            self._retire(self._current)
        try:
            self._current = _Holder(self.prune)
        except (OSError, ValueError) as exc:
            log.warning("cold launches use the host's mount namespace (no launch namespace): %s", exc)
            self._failed = True
            return None
        return self._current

    def _retire(self, holder: _Holder) -> None:
        """No new launch uses ``holder``; it ends now, or with the last launch still attached in it."""
        if holder is self._current:
            self._current = None
        if not holder.attached:
            holder.close()


def _identity(path: str) -> tuple[int, int] | None:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return (st.st_dev, st.st_ino)
