"""The argv that starts one namespace sandbox: ``sh`` joins the cgroups, ``setpriv`` drops to the leased uid,
``bwrap`` builds the namespaces and root view, loads seccomp, and execs the supervisor.

Joining the cgroup happens in the launching shell itself (``echo $$ > cgroup.procs`` then ``exec``), so every
process of the sandbox starts inside its limits without a ``preexec_fn`` (which would force a slow fork).
"""

from __future__ import annotations

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
    netns: str | None = None,
) -> list[str]:
    """``netns``: a prepared network namespace with egress to enter (nsenter, still as root), else bwrap makes an
    empty one (only lo): the gateway reaches the agent through the inherited Unix socket either way."""
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
        bwrap,
        *NAMESPACES,
        *network,
        "--uid",
        str(sandbox_uid),
        "--gid",
        str(sandbox_uid),
        "--hostname",
        hostname,
    ]
    sandbox += ["--die-with-parent", "--new-session", "--clearenv"]
    for key, value in environment.items():
        sandbox += ["--setenv", key, value]
    sandbox += [*mounts, "--chdir", chdir, "--seccomp", str(seccomp_fd), "--", *command]
    return [
        "/bin/sh",
        "-c",
        JOIN_CGROUPS,
        "hangar-launch",
        str(len(procs_files)),
        *procs_files,
        *enter,
        *drop,
        *sandbox,
    ]
