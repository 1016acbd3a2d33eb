"""The launch namespace's holder: a small, long-lived root process whose mount namespace cold launchers enter.

Run by ``launch_ns.LaunchNamespace`` as ``python -I -S launch_holder.py FD`` (stdlib only). It makes a private copy
of the host's mount namespace and detaches every sandbox's mounts from it (their tmpfs, overlays, ID-mapped views,
network namespace files, storage slots), so bwrap, which copies its launcher's whole mount table and reads it once
per bind, works on a table of a few dozen mounts however many sessions are alive. A launch's own state dir is
attached on request (a detached ``open_tree`` clone made by the host, received over FD) and detached once the
sandbox's supervisor runs; both answers are one SEQPACKET message each, so the host never waits on a thread.
"""

from __future__ import annotations

import array
import ctypes
import ctypes.util
import json
import os
import socket
import sys

CLONE_NEWNS = 0x00020000
MS_REC = 0x4000
MS_PRIVATE = 1 << 18
MNT_DETACH = 0x2
SYS_MOVE_MOUNT = 429
MOVE_MOUNT_F_EMPTY_PATH = 0x4
AT_FDCWD = -100
SANDBOX_SOURCES = {"hangar-sandbox", "hangar-image"}  # a sandbox's writable tmpfs, an image sandbox's overlay
# A copy here would keep the device busy after the host unmounts it (a session's storage image: its next sandbox
# waits for the loop device to be released). Network namespace files likewise would keep a namespace alive.
LOOP_DEVICES = "/dev/loop"


def libc() -> ctypes.CDLL:
    lib = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
    lib.mount.argtypes = [ctypes.c_char_p, ctypes.c_char_p, ctypes.c_char_p, ctypes.c_ulong, ctypes.c_char_p]
    lib.umount2.argtypes = [ctypes.c_char_p, ctypes.c_int]
    lib.unshare.argtypes = [ctypes.c_int]
    return lib


def check(result: int, what: str) -> None:
    if result < 0:
        err = ctypes.get_errno()
        raise OSError(err, f"{what}: {os.strerror(err)}")


def unescape(field: str) -> str:
    return field.encode().decode("unicode_escape") if "\\" in field else field


def sandbox_mounts(mountinfo: str, prune: list[str]) -> list[str]:
    """Mount points of sandboxes (any installation's: their state dirs hold a ``hangar-sandbox`` tmpfs), network
    namespace files, loop devices (sessions' storage images), and mounts below the ``prune`` dirs (not the dirs
    themselves), deepest first. What the host unmounts later stays mounted here until the holder ends (the copy
    is private): nothing kept may be something the host waits to be released."""
    points: list[tuple[str, str, str]] = []
    for line in mountinfo.splitlines():
        fields = line.split()
        sep = fields.index("-")
        points.append((unescape(fields[4]), fields[sep + 1], fields[sep + 2]))
    state_dirs = {os.path.dirname(p) for p, fstype, source in points if source == "hangar-sandbox"}
    state_dirs.discard("/")
    under = [d.rstrip("/") + "/" for d in (*state_dirs, *prune)]
    drop = []
    for point, fstype, source in points:
        inside = point in state_dirs or any(point.startswith(d) for d in under)
        if fstype == "nsfs" or source in SANDBOX_SOURCES or source.startswith(LOOP_DEVICES) or inside:
            drop.append(point)
    return sorted(set(drop), key=lambda p: p.count("/"), reverse=True)


def serve(sock: socket.socket, lib: ctypes.CDLL) -> None:
    while True:
        fds = array.array("i")
        data, ancillary, _flags, _addr = sock.recvmsg(65536, socket.CMSG_SPACE(4 * fds.itemsize))
        if not data:
            return  # the host went away: so does the namespace
        for level, kind, payload in ancillary:
            if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
                fds.frombytes(payload[: len(payload) - len(payload) % fds.itemsize])
        try:
            reply = handle(json.loads(data), list(fds), lib)
        except OSError as exc:
            reply = {"error": str(exc)}
        finally:
            for fd in fds:
                os.close(fd)
        sock.send(json.dumps(reply).encode())


def handle(request: dict[str, object], fds: list[int], lib: ctypes.CDLL) -> dict[str, object]:
    path = str(request["path"])
    if request["op"] == "enter":
        if len(fds) != 1:
            raise OSError(0, "enter needs the state dir's detached tree")
        check(
            lib.syscall(SYS_MOVE_MOUNT, fds[0], b"", AT_FDCWD, path.encode(), MOVE_MOUNT_F_EMPTY_PATH),
            f"move_mount {path}",
        )
        check(lib.mount(None, path.encode(), None, MS_REC | MS_PRIVATE, None), f"make {path} private")
        stats: list[list[int] | None] = []
        for source in request.get("check", []):  # type: ignore[attr-defined]
            try:
                st = os.stat(source)
                stats.append([st.st_dev, st.st_ino])
            except OSError:
                stats.append(None)
        return {"stats": stats}
    if request["op"] == "leave":
        check(lib.umount2(path.encode(), MNT_DETACH), f"umount {path}")
        return {"ok": True}
    raise OSError(0, f"unknown request {request['op']!r}")


def main() -> None:
    sock = socket.socket(fileno=int(sys.argv[1]))
    lib = libc()
    check(lib.unshare(CLONE_NEWNS), "unshare the mount namespace")
    # Private: nothing the host mounts later reaches this namespace, nor the sandboxes bwrap copies it into.
    check(lib.mount(None, b"/", None, MS_REC | MS_PRIVATE, None), "make / private")
    with open("/proc/self/mountinfo") as info:
        drop = sandbox_mounts(info.read(), sys.argv[2:])
    for point in drop:
        lib.umount2(point.encode(), MNT_DETACH)  # EINVAL: already gone with a parent detached before it
    os.chdir("/")
    sock.send(json.dumps({"ready": len(drop)}).encode())
    serve(sock, lib)


if __name__ == "__main__":
    main()
