"""The argv that starts one namespace sandbox: ``sh`` joins the cgroups, ``setpriv`` drops to the leased uid,
``bwrap`` builds the namespaces and root view, loads seccomp, and execs the supervisor.

Joining the cgroup happens in the launching shell itself (``echo $$ > cgroup.procs`` then ``exec``), so every
process of the sandbox starts inside its limits without a ``preexec_fn`` (which would force a slow fork).
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence

# Joins each cgroup.procs file given before the command, then becomes the command.
JOIN_CGROUPS = 'n=$1; shift; while [ "$n" -gt 0 ]; do echo $$ > "$1" || exit 125; shift; n=$((n-1)); done; exec "$@"'
NAMESPACES = (
    "--unshare-user",
    "--unshare-pid",
    "--unshare-ipc",
    "--unshare-uts",
    "--unshare-cgroup",
    "--disable-userns",  # sets user.max_user_namespaces=0 inside: no nested user namespaces
)


def launch_argv(
    *,
    setpriv: str,
    bwrap: str,
    uid: int,
    procs_files: Sequence[str],
    seccomp_fd: int,
    sandbox_uid: int,
    hostname: str,
    mounts: Sequence[str],
    environment: Mapping[str, str],
    chdir: str,
    command: Sequence[str],
    args_fd: int,
    netns: str | None = None,
    sandbox_gid: int | None = None,
) -> tuple[list[str], bytes]:
    """The launcher's argv, and bwrap's own arguments for ``args_fd``: bwrap reads them from that fd (``--args``),
    so the agent's environment (API keys, say) never shows in a command line that every host user can read.

    ``netns``: a prepared network namespace with egress to enter (nsenter, still as root), else bwrap makes an empty
    one (only lo): the gateway reaches the agent through the inherited Unix socket either way. ``sandbox_uid`` and
    ``sandbox_gid`` are the ids seen inside (an image's ``User``); the host sees ``uid`` either way."""
    enter = ["nsenter", f"--net={netns}"] if netns else []
    network = [] if netns else ["--unshare-net"]
    drop = [
        setpriv,
        f"--reuid={uid}",
        f"--regid={uid}",
        "--clear-groups",
        "--nnp",  # no_new_privs: no setuid binary can raise privileges again
        "--inh-caps=-all",
        "--bounding-set=-all",
    ]
    sandbox = [
        *NAMESPACES,
        *network,
        "--uid",
        str(sandbox_uid),
        "--gid",
        str(sandbox_uid if sandbox_gid is None else sandbox_gid),
        "--hostname",
        hostname,
    ]
    sandbox += ["--die-with-parent", "--new-session", "--clearenv"]
    for key, value in environment.items():
        sandbox += ["--setenv", key, value]
    sandbox += [*mounts, "--chdir", chdir, "--seccomp", str(seccomp_fd)]
    if any("\0" in arg for arg in sandbox):  # NUL separates bwrap's arguments: a value must never add one
        raise ValueError("a sandbox argument or environment variable contains a NUL character")
    argv = [
        "/bin/sh",
        "-c",
        JOIN_CGROUPS,
        "hangar-launch",
        str(len(procs_files)),
        *procs_files,
        *enter,
        *drop,
        bwrap,
        "--args",
        str(args_fd),
        "--",
        *command,  # the supervisor's argv: fds, port and the agent's argv, nothing secret
    ]
    return argv, b"\0".join(arg.encode() for arg in sandbox) + b"\0"


def data_fd(name: str, data: bytes = b"") -> int:
    """A readable fd holding ``data`` in memory (a memfd: nothing on disk), positioned at its start."""
    fd = os.memfd_create(name)
    fill(fd, data)
    return fd


def fill(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]
    os.lseek(fd, 0, os.SEEK_SET)
