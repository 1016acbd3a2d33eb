"""How a template starts: the launcher's argv and bwrap's arguments for a version's warm template.

bwrap runs as root without a user namespace (only the host may map a forked session's uid), builds the same root
view as a cold session's and loads the template seccomp filter; ``isolate.py template`` then drops to the leased uid
and the zygote (``sandbox/zygote.py``) imports the agent.
"""

from __future__ import annotations

from pathlib import Path

from hangar.domain.errors import InternalError
from hangar.sandbox.base import OUTBOUND_DIR, SandboxSpec, TemplateUnsafe
from hangar.sandbox.namespace import image_root, rootfs, seccomp, storage
from hangar.sandbox.namespace.cgroups import Cgroup
from hangar.sandbox.namespace.launcher import JOIN_CGROUPS
from hangar.sandbox.state import StateDir
from hangar.sandbox.supervised import TEMPLATE_PROGRAMS, agent_environment, outbound_options

SYSTEM_PYTHON = "/usr/bin/python3.11"
# An image's forks attach a root of their own and pivot into it (forking.prepare_fork): their template may do both
# (it has no capabilities in the initial user namespace; the session filter stacked in each fork denies them again).
IMAGE_TEMPLATE_ALLOWS = seccomp.TEMPLATE_ALLOWS | {"move_mount", "pivot_root"}
TEMPLATE_NAMESPACES = (
    "--unshare-pid",
    "--unshare-net",
    "--unshare-ipc",
    "--unshare-uts",
    "--unshare-cgroup",
    "--as-pid-1",  # isolate.py is pid 1 and reaps; bwrap would otherwise exit (and end the namespace) with the zygote
)


def template_argv(bwrap: str, spec: SandboxSpec, uid: int, cgroup: Cgroup, control_fd: int, args_fd: int) -> list[str]:
    """``sh`` joins the template's cgroups, then bwrap (as root, arguments from ``args_fd``) starts ``isolate.py
    template``, which drops to the leased uid and execs the zygote on the agent's command."""
    if spec.rootfs is not None:
        python, reason = image_root.image_python(spec.rootfs, spec.command[0], image_path(spec))
        if python is None:
            raise TemplateUnsafe(reason)
        zygote = [python, image_root.ZYGOTE_IN_IMAGE, f"--control-fd={control_fd}", f"--port={spec.agent_port}"]
        zygote.append("--image=1")
        stage = [*image_root.host_interpreter(), "-I", "-S", image_root.ISOLATE_IN_IMAGE]
    else:
        python = str(spec.env_dir / "bin" / "python")
        zygote = [python, rootfs.ZYGOTE_PATH, f"--control-fd={control_fd}", f"--port={spec.agent_port}"]
        stage = [SYSTEM_PYTHON, "-I", "-S", rootfs.ISOLATE_PATH]
    zygote += outbound_options(spec, OUTBOUND_DIR)
    if spec.outbound is not None and spec.outbound.template_credentials_port is not None:
        zygote.append(f"--template-credentials-port={spec.outbound.template_credentials_port}")
    zygote.append("--")
    procs = cgroup.procs_files()
    return [
        "/bin/sh",
        "-c",
        JOIN_CGROUPS,
        "hangar-template",
        str(len(procs)),
        *procs,
        bwrap,
        "--args",
        str(args_fd),
        "--",
        *stage,
        "template",
        f"--uid={uid}",
        "--",
        *zygote,
        *spec.command,
    ]


def template_bwrap_args(
    spec: SandboxSpec, state: StateDir, inside: Path, seccomp_fd: int, uid: int | None = None
) -> bytes:
    """bwrap runs as root here (no user namespace: only the host may map a forked session's uid), builds the same
    root view as for a session and loads the template filter; ``isolate.py template`` then drops to the leased
    uid. The /proc it gets is mounted by isolate.py, uncovered, so that forked sessions can mount their own."""
    etc = rootfs.write_etc(state, spec.outbound.hosts if spec.outbound else ())
    if spec.rootfs is not None:
        user = image_root.resolve_user(spec.rootfs, spec.user)
        env = agent_environment(spec, spec.agent_port, user.home, "/tmp")
        if uid is None:
            raise InternalError("an image template needs its uid lease")
        merged = image_root.mount_root(state, spec.rootfs, uid, spec.workdir, spec.outbound)
        image_root.template_mount_points(merged)
        mounts = image_root.image_mounts(merged, etc, inside, spec.limits.disk_bytes, spec.outbound)
        # /.hangar is a root-owned tmpfs here, not the overlay's directory: the import (which owns the template's
        # root) can neither rename it nor plant what forks bind from it.
        mounts[3:3] = ["--perms", "0755", "--size", "65536", "--tmpfs", image_root.HIDDEN]
        for name in TEMPLATE_PROGRAMS:  # isolate.py, zygote.py (ISOLATE_IN_IMAGE, ZYGOTE_IN_IMAGE), warmup.py, ...
            mounts += ["--ro-bind", str(inside / f"{name}.py"), f"{image_root.HIDDEN}/{name}.py"]
        stage = state.path / "stage"
        stage.mkdir(mode=0o755)
        mounts += ["--ro-bind", str(stage), image_root.FORK_STAGE]
        mounts += storage.template_mounts(state.path.parent, spec, merged)
        chdir = image_root.normalized(spec.workdir)
    else:
        env = agent_environment(spec, spec.agent_port, rootfs.HOME, "/tmp")
        mounts = rootfs.bwrap_mounts(
            state,
            etc,
            spec.code_dir,
            spec.env_dir,
            inside,
            spec.limits.disk_bytes,
            spec.outbound,
            extra=storage.template_mounts(state.path.parent, spec),
        )
        chdir = str(spec.code_dir)
    mounts = _open_parents([arg if arg != "--proc" else "--dir" for arg in mounts])
    # As root, bwrap makes /dev/shm root's 0755: give it the mode a user-namespace bwrap gives the sandbox uid.
    at = mounts.index("/dev/shm") - 3  # ... --size N --tmpfs /dev/shm
    mounts[at:at] = ["--perms", "1777"]
    args = [*TEMPLATE_NAMESPACES, "--hostname", rootfs.HOSTNAME, "--die-with-parent", "--new-session", "--clearenv"]
    for key, value in env.items():
        args += ["--setenv", key, value]
    args += [*mounts, "--chdir", chdir, "--seccomp", str(seccomp_fd)]
    return b"\0".join(arg.encode() for arg in args) + b"\0"


def image_path(spec: SandboxSpec) -> str:
    """The PATH the image's agent gets (its Env's, else a container runtime's default)."""
    return agent_environment(spec, spec.agent_port, "/", "/tmp").get("PATH", "")


BIND_OPTIONS = {"--bind", "--ro-bind", "--ro-bind-try", "--symlink"}  # two-argument options: SOURCE DEST
DEST_OPTIONS = {"--dir", "--tmpfs", "--dev", "--proc"}  # one-argument options: DEST


def _open_parents(mounts: list[str]) -> list[str]:
    """bwrap running as root creates missing parents of a bind's destination as root with mode 0700, which the
    template's uid could not traverse (a user-namespace bwrap creates them as the sandbox uid): declare each such
    parent first as a 0755 directory."""
    out: list[str] = []
    declared = {"/"}
    i = 0
    while i < len(mounts):
        option = mounts[i]
        if option in BIND_OPTIONS:
            dest = mounts[i + 2]
            parent = Path(dest).parent
            missing = [a for a in reversed([parent, *parent.parents]) if str(a) not in declared]
            for ancestor in missing:
                out += ["--perms", "0755", "--dir", str(ancestor)]
                declared.add(str(ancestor))
            out += mounts[i : i + 3]
            declared.add(dest)
            i += 3
        elif option in DEST_OPTIONS:
            declared.add(mounts[i + 1])
            out += mounts[i : i + 2]
            i += 2
        elif option == "--size":
            out += mounts[i : i + 2]
            i += 2
        else:
            out.append(option)
            i += 1
    return out
