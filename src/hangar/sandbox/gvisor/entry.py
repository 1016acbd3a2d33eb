"""In-sandbox entry of a gVisor sandbox: binds the supervisor's two sockets, then runs ``supervisor.py`` in-process.

runsc cannot hand host file descriptors to the sandbox, so the host cannot pass listening sockets down as the
namespace backend does. Instead this program (stdlib only, the first process inside gVisor) binds them in a
directory shared with the host (``runsc --host-uds=create`` makes them real host sockets, which the host then
bind-mounts onto files the sandbox cannot touch), opens the host's ready FIFO, and becomes the supervisor with
those three descriptors on fds 3, 4 and 5.

Usage: ``entry.py SOCKET_DIR READY_FIFO SUPERVISOR [SUPERVISOR_OPTIONS...] -- AGENT_ARGV...``
"""

from __future__ import annotations

import fcntl
import os
import runpy
import socket
import sys

BACKLOG = 128


def main(args: list[str]) -> None:
    if len(args) < 4 or "--" not in args:
        raise SystemExit(f"usage: {__doc__.rsplit('Usage: ', 1)[1].strip()}")
    socket_dir, ready, supervisor, *rest = args
    fds = []
    for name in ("agent.sock", "control.sock"):
        listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        listener.bind(os.path.join(socket_dir, name))
        listener.listen(BACKLOG)
        fds.append(listener.detach())
    fds.append(os.open(ready, os.O_WRONLY | os.O_CLOEXEC))
    high = [fcntl.fcntl(fd, fcntl.F_DUPFD_CLOEXEC, 10) for fd in fds]  # out of the way of 3, 4 and 5
    for fd in fds:
        os.close(fd)
    for target, fd in zip((3, 4, 5), high, strict=True):
        os.dup2(fd, target, inheritable=False)
        os.close(fd)
    sys.argv = [supervisor, "--agent-fd=3", "--control-fd=4", "--ready-fd=5", *rest]
    runpy.run_path(supervisor, run_name="__main__")


if __name__ == "__main__":
    main(sys.argv[1:])
