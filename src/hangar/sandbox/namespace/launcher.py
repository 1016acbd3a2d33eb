"""The argv that starts one namespace sandbox: ``sh`` joins the cgroups, ``setpriv`` drops to the leased uid,
``bwrap`` builds the namespaces and root view, loads seccomp, and execs the supervisor.

Joining the cgroup happens in the launching shell itself (``echo $$ > cgroup.procs`` then ``exec``), so every
process of the sandbox starts inside its limits without a ``preexec_fn`` (which would force a slow fork).

A gated launch (``GATED_JOIN``) joins the cgroups at once, then waits for ``1`` on its stdin before going on: the
join (a cgroup v1 migration waits for an RCU grace period, ~5-10 ms) then overlaps the host's creation of the
network namespace the launcher enters next. Anything but ``1`` (the host closing the pipe) ends it with 125.
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Mapping, Sequence
from pathlib import Path

# Joins each cgroup.procs file given before the command, then becomes the command.
JOIN_CGROUPS = 'n=$1; shift; while [ "$n" -gt 0 ]; do echo $$ > "$1" || exit 125; shift; n=$((n-1)); done; exec "$@"'
# The same, then blocks until the host writes "1" on its stdin (the gate); the command gets /dev/null as stdin.
GATED_JOIN = JOIN_CGROUPS.replace('exec "$@"', 'read -r go && [ "$go" = 1 ] || exit 125; exec "$@" </dev/null')
# The same, and the gate also names the mount namespace to launch from (``launch_ns``): "1 /proc/PID/ns/mnt"; the
# command is nsenter, which gets it as its first option (it opens every namespace before entering any).
GATED_ENTER = JOIN_CGROUPS.replace(
    'exec "$@"',
    'read -r go mnt && [ "$go" = 1 ] || exit 125; case "$mnt" in /proc/*/ns/mnt) ;; *) exit 125;; esac; '
    'cmd=$1; shift; exec "$cmd" "--mount=$mnt" "$@" </dev/null',
)
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
    gated: bool = False,
) -> tuple[list[str], bytes]:
    """The launcher's argv, and bwrap's own arguments for ``args_fd`` (``launcher_argv`` and ``bwrap_arguments``)."""
    argv = launcher_argv(
        setpriv=setpriv,
        bwrap=bwrap,
        uid=uid,
        procs_files=procs_files,
        command=command,
        args_fd=args_fd,
        netns=netns,
        gated=gated,
    )
    sandbox = bwrap_arguments(
        seccomp_fd=seccomp_fd,
        sandbox_uid=sandbox_uid,
        hostname=hostname,
        mounts=mounts,
        environment=environment,
        chdir=chdir,
        netns=netns,
        sandbox_gid=sandbox_gid,
    )
    return argv, sandbox


def launcher_argv(
    *,
    setpriv: str,
    bwrap: str,
    uid: int,
    procs_files: Sequence[str],
    command: Sequence[str],
    args_fd: int,
    netns: str | None = None,
    gated: bool = False,
    mount_ns: bool = False,
) -> list[str]:
    """``sh`` joining the cgroups, ``nsenter`` (with ``netns``), ``setpriv`` dropping to ``uid``, then bwrap reading
    its arguments from ``args_fd``. ``gated``: the launcher waits for the gate on its stdin after joining the cgroups
    (``spawn_launcher(..., gate=fd)``), so ``args_fd`` may be filled after the spawn, up to the gate's ``1``.
    ``mount_ns`` (gated only): the gate's line names the mount namespace nsenter enters too (``GATED_ENTER``)."""
    enter = ["nsenter", f"--net={netns}"] if netns else []
    if mount_ns:
        if not gated:
            raise ValueError("only a gated launcher is told its mount namespace")
        enter = enter or ["nsenter"]
    script = (GATED_ENTER if mount_ns else GATED_JOIN) if gated else JOIN_CGROUPS
    drop = [
        setpriv,
        f"--reuid={uid}",
        f"--regid={uid}",
        "--clear-groups",
        "--nnp",  # no_new_privs: no setuid binary can raise privileges again
        "--inh-caps=-all",
        "--bounding-set=-all",
    ]
    return [
        "/bin/sh",
        "-c",
        script,
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


def bwrap_arguments(
    *,
    seccomp_fd: int,
    sandbox_uid: int,
    hostname: str,
    mounts: Sequence[str],
    environment: Mapping[str, str],
    chdir: str,
    netns: str | None = None,
    sandbox_gid: int | None = None,
) -> bytes:
    """bwrap's own arguments, NUL-separated, for its ``--args`` fd: so the agent's environment (API keys, say) never
    shows in a command line that every host user can read.

    ``netns``: a prepared network namespace with egress that the launcher enters (nsenter, still as root), else bwrap
    makes an empty one (only lo): the gateway reaches the agent through the inherited Unix socket either way.
    ``sandbox_uid`` and ``sandbox_gid`` are the ids seen inside (an image's ``User``); the host sees the leased uid
    either way."""
    network = [] if netns else ["--unshare-net"]
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
    return b"\0".join(arg.encode() for arg in sandbox) + b"\0"


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


def spawn_launcher(
    argv: Sequence[str], env: Mapping[str, str], log: Path, pass_fds: Sequence[int], gate: int | None = None
) -> subprocess.Popen[bytes]:
    """``supervised.spawn`` with the gate's read end as stdin (a gated launch), else /dev/null: the launcher leads
    a new session (a stop kills the whole group), its output appended to ``log``."""
    with open(os.open(log, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600), "ab", buffering=0) as out:
        return subprocess.Popen(
            list(argv),
            env=dict(env),
            cwd="/",
            stdin=subprocess.DEVNULL if gate is None else gate,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            pass_fds=tuple(pass_fds),
        )
