"""Isolation steps for a session forked from a warm template, the template's own privileged first stage, and the
checks that the template is still safe to fork (``check_forkable``, beside ``open_files`` which it uses).

Runs inside the sandbox, so it imports the standard library only (ctypes for the syscalls Python lacks). A cold
session gets its isolation from bubblewrap; a forked session gets the same properties from ``enter_session``:

* own user namespace whose only mapping is the sandbox uid 1000 -> the session's leased host uid (the host writes
  the map: a template can never pick a uid), then mount, pid, net, ipc, uts and cgroup namespaces owned by it;
* a fresh, size-capped tmpfs for home and /tmp, a fresh /dev/shm and devpts instance, a /proc of its own pid
  namespace with ``sys``, ``sysrq-trigger``, ``irq`` and ``bus`` read-only (as bwrap covers them); the root stays
  read-only;
* no nested user namespaces (``user.max_user_namespaces=0``), no capabilities in any set, no_new_privs,
  non-dumpable, then the session seccomp filter (the same compiled program bwrap loads for cold sessions).

Template stage (``python3.11 -I -S isolate.py template --uid=N -- ARGV``): bwrap runs it as root inside the
template's fresh pid/mount/net/ipc/uts namespaces; it mounts a /proc of that pid namespace (forked sessions need one
without covered paths to mount their own), drops to the template's leased uid with no capabilities and
no_new_privs, and stays as the namespace's pid 1 reaping children while ARGV (the zygote) runs as its child. It
exits once it has no children left, so killing the zygote never kills the sessions forked from it.
"""

from __future__ import annotations

import ctypes
import fcntl
import os
import signal
import socket
import stat
import struct
import sys
from collections.abc import Sequence
from typing import Any

CLONE_NEWNS = 0x00020000
CLONE_NEWCGROUP = 0x02000000
CLONE_NEWUTS = 0x04000000
CLONE_NEWIPC = 0x08000000
CLONE_NEWUSER = 0x10000000
CLONE_NEWPID = 0x20000000
CLONE_NEWNET = 0x40000000
SESSION_NAMESPACES = CLONE_NEWUSER | CLONE_NEWNS | CLONE_NEWNET | CLONE_NEWIPC | CLONE_NEWUTS | CLONE_NEWPID
MS_RDONLY = 0x1
MS_NOSUID = 0x2
MS_NODEV = 0x4
MS_NOEXEC = 0x8
MS_REMOUNT = 0x20
MS_BIND = 0x1000
MS_REC = 0x4000
MS_PRIVATE = 1 << 18
MS_SLAVE = 1 << 19
MNT_DETACH = 0x2
PR_SET_PDEATHSIG = 1
PR_SET_DUMPABLE = 4
PR_CAPBSET_DROP = 24
PR_SET_NO_NEW_PRIVS = 38
PR_CAP_AMBIENT = 47
PR_CAP_AMBIENT_CLEAR_ALL = 4
PR_SET_SECCOMP = 22
SECCOMP_MODE_FILTER = 2
LINUX_CAPABILITY_VERSION_3 = 0x20080522
SIOCGIFFLAGS = 0x8913
SIOCSIFFLAGS = 0x8914
IFF_UP = 0x1
SANDBOX_UID = 1000
HOME = "/home/agent"
STAGE = "/opt/hangar"  # an existing directory of the template's view, briefly covered while the session mounts
COVERED_PROC = ("sys", "sysrq-trigger", "irq", "bus")
CREDS = struct.Struct("iII")


WRITABLE_ROOTS = ("/tmp", HOME, "/dev/shm")
CARRY_LIMIT_BYTES = 64 << 20  # what import-time code may leave in home and /tmp for every session to get a copy of
CARRY_LIMIT_ENTRIES = 4096
REOPENABLE_DEVICES = ("/dev/null", "/dev/zero", "/dev/full", "/dev/random", "/dev/urandom")
ITIMERS = (("alarm", signal.ITIMER_REAL), ("virtual", signal.ITIMER_VIRTUAL), ("profiling", signal.ITIMER_PROF))


class NotForkable(Exception):
    """Something the agent did at import cannot be carried into separate sessions: they start cold."""


class _SockFprog(ctypes.Structure):
    _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.c_void_p)]


_LIBC: ctypes.CDLL | None = None


def libc() -> ctypes.CDLL:
    global _LIBC
    if _LIBC is None:
        # SAFETY: the C library is loaded in every CPython process; each function used gets its signature here.
        lib = ctypes.CDLL("libc.so.6", use_errno=True)
        lib.mount.argtypes = [ctypes.c_char_p, ctypes.c_char_p, ctypes.c_char_p, ctypes.c_ulong, ctypes.c_char_p]
        lib.umount2.argtypes = [ctypes.c_char_p, ctypes.c_int]
        lib.unshare.argtypes = [ctypes.c_int]
        lib.prctl.argtypes = [ctypes.c_int, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong]
        lib.capset.argtypes = [ctypes.c_void_p, ctypes.c_void_p]
        lib.setfsuid.argtypes = [ctypes.c_uint]
        lib.setfsgid.argtypes = [ctypes.c_uint]
        _LIBC = lib
    return _LIBC


def _check(rc: int, what: str) -> None:
    if rc != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"{what}: {os.strerror(err)}")


def mount(source: str | None, target: str, fstype: str | None, flags: int, data: str | None = None) -> None:
    enc = [None if v is None else v.encode() for v in (source, target, fstype, data)]
    _check(libc().mount(enc[0], enc[1], enc[2], flags, enc[3]), f"mount {fstype or 'bind'} on {target}")


def unshare(flags: int) -> None:
    _check(libc().unshare(flags), f"unshare({flags:#x})")


def prctl(option: int, arg: int = 0) -> None:
    _check(libc().prctl(option, arg, 0, 0, 0), f"prctl({option})")


def drop_privileges(uid: int, gid: int | None = None) -> None:
    """Become ``uid`` and ``gid`` (default: ``uid``) with no supplementary groups, no capabilities, no_new_privs.

    Dropping the bounding set first needs CAP_SETPCAP; capset clears what setresuid leaves when the old uid was
    not mapped in the current user namespace (then the kernel's 0 -> nonzero rule does not apply)."""
    os.setgroups([])
    gid = uid if gid is None else gid
    os.setresgid(gid, gid, gid)
    with open("/proc/sys/kernel/cap_last_cap") as last:
        last_cap = int(last.read())
    for cap in range(last_cap + 1):
        _check(libc().prctl(PR_CAPBSET_DROP, cap, 0, 0, 0), f"drop capability {cap} from the bounding set")
    _check(libc().prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL, 0, 0, 0), "clear ambient capabilities")
    os.setresuid(uid, uid, uid)
    header = (ctypes.c_uint32 * 2)(LINUX_CAPABILITY_VERSION_3, 0)
    data = (ctypes.c_uint32 * 6)()
    _check(libc().capset(ctypes.byref(header), ctypes.byref(data)), "capset (clear)")
    prctl(PR_SET_NO_NEW_PRIVS, 1)
    with open("/proc/self/status") as proc_status:
        status = proc_status.read()
    for line in status.splitlines():
        if line.startswith(("CapPrm:", "CapEff:", "CapInh:", "CapAmb:", "CapBnd:")) and int(line.split()[1], 16):
            raise OSError(f"capabilities left after the drop: {line}")


def load_seccomp(program: bytes) -> None:
    """Install a classic-BPF seccomp filter (``struct sock_filter`` array) on this process and its children."""
    if not program or len(program) % 8:
        raise ValueError(f"seccomp program of {len(program)} bytes")
    buffer = ctypes.create_string_buffer(program, len(program))
    fprog = _SockFprog(len(program) // 8, ctypes.cast(buffer, ctypes.c_void_p))
    _check(libc().prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, ctypes.addressof(fprog), 0, 0), "load seccomp")


def loopback_up() -> None:
    """A fresh network namespace starts with ``lo`` down; bwrap raises it for cold sessions, this does for forks."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        request = struct.pack("16sH14x", b"lo", 0)
        flags = struct.unpack("16sH14x", fcntl.ioctl(sock, SIOCGIFFLAGS, request))[1]
        fcntl.ioctl(sock, SIOCSIFFLAGS, struct.pack("16sH14x", b"lo", flags | IFF_UP))


def send_creds(sock: socket.socket, tag: bytes) -> None:
    """Tell the host who we are: the kernel checks the pid and uids and translates them into the host's view."""
    creds = CREDS.pack(os.getpid(), os.getuid(), os.getgid())
    sock.sendmsg([tag], [(socket.SOL_SOCKET, socket.SCM_CREDENTIALS, creds)])


def expect(sock: socket.socket, word: bytes) -> None:
    got = sock.recv(len(word))
    if got != word:
        raise OSError(f"the host said {got!r}, not {word!r}")


def close_fds(keep: set[int]) -> None:
    """Close every inherited descriptor except stdio and ``keep`` (the template's own fds never reach a session)."""
    low = 3
    for fd in sorted(keep | {1 << 20}):
        if fd >= low:
            os.closerange(low, fd)
            low = fd + 1


def open_files(exclude: set[int]) -> list[tuple[int, str, int, int, bool]]:
    """Descriptors left open at import, as (fd, path, flags, offset, inheritable): regular files (and harmless
    devices) only. A session reopens each by path, so no two sessions share a file offset; a socket, pipe, event
    fd or deleted file cannot be reopened, and makes the template unforkable."""
    found = []
    for name in os.listdir("/proc/self/fd"):
        fd = int(name)
        if fd < 3 or fd in exclude:
            continue
        try:
            target = os.readlink(f"/proc/self/fd/{fd}")
            info = os.fstat(fd)
        except OSError:
            continue  # the directory listing's own descriptor
        regular = stat.S_ISREG(info.st_mode) and target.startswith("/") and not target.endswith(" (deleted)")
        if not (regular or (stat.S_ISCHR(info.st_mode) and target in REOPENABLE_DEVICES)):
            raise NotForkable(f"the agent keeps {target} open from import (fd {fd}): sessions cannot each get one")
        flags = fcntl.fcntl(fd, fcntl.F_GETFL)
        offset = os.lseek(fd, 0, os.SEEK_CUR) if regular else 0
        found.append((fd, target, flags, offset, os.get_inheritable(fd)))
    return found


def check_forkable(keep: set[int], known_children: set[int]) -> None:
    """Forks must be independent copies: no threads (a fork keeps only the calling one, mid-state), no shared
    writable memory (a MAP_SHARED mapping made at import would be one region in every session), no descriptor a
    session could not reopen (``open_files``; ``keep``: the template's own), no process the agent started (only
    ``known_children``, sessions' first processes) and no armed timer (its handler would run in the template).
    Raises NotForkable."""
    import threading  # the zygote's already; the template stage never gets here

    threads = thread_count()
    if threads != 1 or threading.active_count() != 1:
        names = ", ".join(t.name for t in threading.enumerate() if t is not threading.main_thread())
        raise NotForkable(f"the template runs {threads} threads ({names or 'native'}): a fork would lose them")
    shared = shared_writable_mappings()
    if shared:
        raise NotForkable(f"the template holds shared writable memory ({', '.join(shared[:3])}): forks would share it")
    open_files(keep)  # raises for anything a session could not reopen
    others = set(children()) - known_children
    if others:
        raise NotForkable(f"the agent started processes at import ({len(others)}): forks would not have them")
    armed = [name for name, which in ITIMERS if signal.getitimer(which) != (0.0, 0.0)]
    if armed or posix_timers():
        raise NotForkable(f"the agent armed timers at import ({', '.join(armed) or 'POSIX timers'})")


def thread_count() -> int:
    """Threads of this process as the kernel sees them (native threads included, not only Python's)."""
    return len(os.listdir("/proc/self/task"))


def shared_writable_mappings() -> list[str]:
    """Writable MAP_SHARED regions of this process (``rw-s`` in /proc/self/maps), by what they map."""
    found = []
    with open("/proc/self/maps") as maps:
        for line in maps:
            fields = line.split(maxsplit=5)
            if len(fields) >= 2 and fields[1].startswith("rw") and fields[1][3] == "s":
                found.append(fields[5].strip() if len(fields) == 6 else "anonymous")
    return found


def posix_timers() -> bool:
    with open("/proc/self/timers") as timers:
        return bool(timers.read().strip())


def children() -> list[int]:
    """Pids of this process's children (the kernel's list for its one thread)."""
    with open(f"/proc/self/task/{os.getpid()}/children") as found:
        return [int(pid) for pid in found.read().split()]


def reopen(files: Sequence[tuple[int, str, int, int, bool]]) -> None:
    """Give each descriptor from import its own open file again, at the same number, mode and offset."""
    for fd, path, flags, offset, inheritable in files:
        fresh = os.open(path, flags & ~(os.O_CREAT | os.O_EXCL | os.O_TRUNC))
        if offset and not flags & os.O_APPEND:
            os.lseek(fresh, offset, os.SEEK_SET)
        if fresh == fd:  # the number was free and open() took it (dup3 refuses equal numbers)
            os.set_inheritable(fd, inheritable)
            continue
        os.dup2(fresh, fd, inheritable=inheritable)
        os.close(fresh)


def writable_tree(roots: tuple[str, ...] = WRITABLE_ROOTS) -> list[tuple[str, str, int, bytes]]:
    """What import-time code left in home, /tmp and /dev/shm, as (path, kind d|f|l, mode, content or target), so that
    each session starts with its own copy, as a cold start (whose import wrote into the session) would. Mounts
    beneath (the version's code or environment in tests) are not part of it."""
    entries: list[tuple[str, str, int, bytes]] = []
    total = 0
    for root in roots:
        device = os.lstat(root).st_dev
        for top, dirs, files in os.walk(root):
            dirs[:] = [d for d in dirs if os.lstat(os.path.join(top, d)).st_dev == device]
            for name in dirs + files:
                path = os.path.join(top, name)
                info = os.lstat(path)
                mode = stat.S_IMODE(info.st_mode)
                if stat.S_ISDIR(info.st_mode):
                    entries.append((path, "d", mode, b""))
                elif stat.S_ISLNK(info.st_mode):
                    entries.append((path, "l", mode, os.readlink(path).encode()))
                elif stat.S_ISREG(info.st_mode):
                    total += info.st_size
                    if total > CARRY_LIMIT_BYTES:
                        raise NotForkable(f"the agent left over {CARRY_LIMIT_BYTES >> 20} MiB in home and /tmp")
                    with open(path, "rb") as file:
                        entries.append((path, "f", mode, file.read()))
                if len(entries) > CARRY_LIMIT_ENTRIES:
                    raise NotForkable(f"the agent left over {CARRY_LIMIT_ENTRIES} files in home and /tmp")
    return entries


def restore_tree(entries: Sequence[tuple[str, str, int, bytes]]) -> None:
    for path, kind, mode, payload in entries:
        if kind == "d":
            os.makedirs(path, exist_ok=True)
            os.chmod(path, mode)
        elif kind == "l":
            os.symlink(payload.decode(), path)
        else:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
            with os.fdopen(fd, "wb") as file:
                file.write(payload)
            os.chmod(path, mode)


def split_from_template(handshake: socket.socket) -> list[int]:
    """First half, in the template's child: announce ourselves, make the namespaces, wait for the host.

    Before ``go`` the host has mapped uid 1000 (an image's user) to the session's leased uid, moved us into the
    session's cgroup and (with egress) attached the session's veth to our network namespace. With ``go`` comes, for
    an image, the session's own root (a detached mount the host built); returns the fds that came with it."""
    send_creds(handshake, b"C")
    unshare(SESSION_NAMESPACES)
    handshake.sendall(b"U")
    message, fds, _, _ = socket.recv_fds(handshake, 16, 1)
    if message != b"go":
        for fd in fds:
            os.close(fd)
        raise OSError(f"the host said {message!r}, not {b'go'!r}")
    return fds


def bind_storage_slot(slot: str, path: str) -> None:
    """Bind this session's own slot (a slave of the host's shared slots mount) at the storage's mount path, then
    cut the slots directory off (private: no other session's storage propagates into it) and cover it."""
    slots = os.path.dirname(slot)
    mount(slot, path, None, MS_BIND)
    mount(None, slots, None, MS_PRIVATE)
    mount("hangar-slots", slots, "tmpfs", MS_NOSUID | MS_NODEV | MS_NOEXEC, "size=4096,mode=0755")


def enter_session(
    disk_bytes: int,
    keep: list[str],
    seccomp_program: bytes,
    tree: Sequence[tuple[str, str, int, bytes]] = (),
    files: Sequence[tuple[int, str, int, int, bool]] = (),
    storage: dict[str, Any] | None = None,
) -> None:
    """Second half, as pid 1 of the session's pid namespace (still privileged in its own user namespace only).

    ``keep``: read-only binds of the template's view that lie under home or /tmp (the version's code and
    environment, when they live there): moved aside before the fresh tmpfs covers them, then bound back.
    ``tree`` and ``files``: what the import left in home and /tmp, and the files it keeps open (read in the
    template's view before the fork isolated itself): copied into the fresh tmpfs and reopened there.
    ``storage``: the session storage's ``slot`` and mount ``path`` (``namespace/storage.py``): the mounts stay
    slaves (as a cold sandbox's do) so that the host's mount on the slot reaches the path."""
    mount(None, "/", None, MS_REC | (MS_SLAVE if storage and storage.get("slot") else MS_PRIVATE))
    # Files made below belong to the sandbox uid; the template's uid has no mapping in this namespace.
    libc().setfsuid(SANDBOX_UID)
    libc().setfsgid(SANDBOX_UID)
    size = max(disk_bytes, 4096)
    mount("hangar-session", STAGE, "tmpfs", MS_NOSUID | MS_NODEV, f"size={size},mode=0755")
    for name in ("home", "tmp", "keep"):
        os.mkdir(f"{STAGE}/{name}", 0o700)
    for index, path in enumerate(keep):
        os.mkdir(f"{STAGE}/keep/{index}")
        mount(path, f"{STAGE}/keep/{index}", None, MS_BIND | MS_REC)
    mount(f"{STAGE}/home", HOME, None, MS_BIND)
    mount(f"{STAGE}/tmp", "/tmp", None, MS_BIND)
    for index, path in enumerate(keep):
        os.makedirs(path, exist_ok=True)
        mount(f"{STAGE}/keep/{index}", path, None, MS_BIND | MS_REC)
        mount(None, path, None, MS_BIND | MS_REMOUNT | MS_RDONLY | MS_NOSUID | MS_NODEV)
    _check(libc().umount2(STAGE.encode(), MNT_DETACH), f"umount {STAGE}")
    if storage and storage.get("slot"):
        bind_storage_slot(storage["slot"], storage["path"])
    mount("hangar-shm", "/dev/shm", "tmpfs", MS_NOSUID | MS_NODEV, f"size={size},mode=1777")
    # The template's devpts instance is every fork's (a pty opened in one session would show in all): a new one, as
    # bwrap --dev gives each cold session; /dev/ptmx is the symlink pts/ptmx, so it follows.
    mount("devpts", "/dev/pts", "devpts", MS_NOSUID | MS_NOEXEC, "newinstance,ptmxmode=0666,mode=620")
    mount("proc", "/proc", "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC)
    with open("/proc/sys/user/max_user_namespaces", "w") as limit:  # this namespace's own limit, before the cover
        limit.write("0")
    for name in COVERED_PROC:
        path = f"/proc/{name}"
        if os.path.exists(path):
            mount(path, path, None, MS_BIND | MS_REC)
            mount(None, path, None, MS_BIND | MS_REC | MS_REMOUNT | MS_RDONLY | MS_NOSUID | MS_NODEV)
    # After every mount: a path the import kept open resolves in the session's own /tmp, /dev/shm and /proc.
    restore_tree(tree)
    reopen(files)
    loopback_up()
    unshare(CLONE_NEWCGROUP)  # rooted at the session's cgroup, which the host moved us into before ``go``
    drop_privileges(SANDBOX_UID)
    prctl(PR_SET_DUMPABLE, 0)
    load_seccomp(seccomp_program)


SYS_MOVE_MOUNT = 429  # the same number on every architecture
SYS_PIVOT_ROOT = {"x86_64": 155, "aarch64": 41}.get(os.uname().machine, -1)
MOVE_MOUNT_F_EMPTY_PATH = 0x4
AT_FDCWD = -100
IMAGE_STAGE = "/.hangar-stage"  # image_root.FORK_STAGE: a mount point in the template's root (not renamable)
# image_root.SUPERVISOR_PATH and SUPERVISOR_SIBLING_PATHS: a fork's view of /.hangar is a cold session's
SUPERVISOR_FILES = ("/.hangar/supervisor.py", "/.hangar/commands.py", "/.hangar/sock_diag.py")
IMAGE_BINDS = ("/dev", "/.hangar/usr", *SUPERVISOR_FILES, "/etc/hosts", "/etc/hostname", "/etc/resolv.conf")
IMAGE_READ_ONLY = ("/.hangar/usr", *SUPERVISOR_FILES, "/etc/hosts", "/etc/hostname", "/etc/resolv.conf")
OUTBOUND = "/run/hangar"


def enter_image_session(
    root_fd: int,
    uid: int,
    gid: int,
    workdir: str,
    shm_bytes: int,
    seccomp_program: bytes,
    files: Sequence[tuple[int, str, int, int, bool]] = (),
    storage: dict[str, Any] | None = None,
) -> None:
    """``enter_session`` for a fork of an image's template: attach the session's own root (an overlay of the image
    the host built for this session alone: lower ID-mapped to its lease, upper on its tmpfs), carry over what Hangar
    binds from the template's view (and the version's volumes and this session's storage slot, ``storage``), pivot
    into it and detach the template's root, then the same steps as for code."""
    mount(None, "/", None, MS_REC | (MS_SLAVE if storage and storage.get("slot") else MS_PRIVATE))
    if libc().syscall(SYS_MOVE_MOUNT, root_fd, b"", AT_FDCWD, IMAGE_STAGE.encode(), MOVE_MOUNT_F_EMPTY_PATH) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"move_mount the session's root: {os.strerror(err)}")
    os.close(root_fd)
    new = IMAGE_STAGE
    binds = [path for path in (*IMAGE_BINDS, OUTBOUND) if os.path.exists(path)]
    for path in binds:
        mount(path, new + path, None, MS_BIND | MS_REC)
        if path in IMAGE_READ_ONLY or path == OUTBOUND:
            mount(None, new + path, None, MS_BIND | MS_REMOUNT | MS_RDONLY | MS_NOSUID | MS_NODEV)
    for path, read_only in (storage or {}).get("volumes", []):
        mount(path, new + path, None, MS_BIND | MS_REC)
        if read_only:
            mount(None, new + path, None, MS_BIND | MS_REMOUNT | MS_RDONLY | MS_NOSUID | MS_NODEV)
    if storage and storage.get("slot"):
        mount(storage["slot"], new + storage["path"], None, MS_BIND)  # a slave: the host's mount on it arrives
    size = max(shm_bytes, 4096)
    mount("hangar-shm", new + "/dev/shm", "tmpfs", MS_NOSUID | MS_NODEV, f"size={size},mode=1777")
    mount("devpts", new + "/dev/pts", "devpts", MS_NOSUID | MS_NOEXEC, "newinstance,ptmxmode=0666,mode=620")
    mount("proc", new + "/proc", "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC)
    os.chdir(new)
    if libc().syscall(SYS_PIVOT_ROOT, b".", b".") != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"pivot_root: {os.strerror(err)}")
    _check(libc().umount2(b".", MNT_DETACH), "umount the template's root")
    os.chdir("/")
    with open("/proc/sys/user/max_user_namespaces", "w") as limit:
        limit.write("0")
    for name in COVERED_PROC:
        path = f"/proc/{name}"
        if os.path.exists(path):
            mount(path, path, None, MS_BIND | MS_REC)
            mount(None, path, None, MS_BIND | MS_REC | MS_REMOUNT | MS_RDONLY | MS_NOSUID | MS_NODEV)
    libc().setfsuid(uid)
    libc().setfsgid(gid)
    reopen(files)
    loopback_up()
    unshare(CLONE_NEWCGROUP)
    drop_privileges(uid, gid)
    os.chdir(workdir)
    prctl(PR_SET_DUMPABLE, 0)
    load_seccomp(seccomp_program)


def _template_stage(uid: int, argv: list[str]) -> int:
    mount("proc", "/proc", "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC)
    drop_privileges(uid)
    # Changing credentials cleared bwrap's --die-with-parent: arm it again, so the template (and every session
    # forked from it, in its pid namespace) dies with the bwrap that dies with Hangar.
    prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
    zygote = os.fork()
    if zygote == 0:
        try:
            os.execv(argv[0], argv)
        except OSError as exc:
            print(f"isolate.py: cannot run {argv[0]}: {exc}", file=sys.stderr, flush=True)
        os._exit(127)
    os.closerange(3, 1 << 20)  # the zygote's control socket is the zygote's alone: its exit must close it
    status = 0
    while True:  # pid 1: reap everything, including sessions whose first process left the zygote
        try:
            pid, wait_status = os.wait()
        except ChildProcessError:
            return status
        except InterruptedError:
            continue
        if pid == zygote:
            status = os.waitstatus_to_exitcode(wait_status)


if __name__ == "__main__":
    args = sys.argv[1:]
    if len(args) < 4 or args[0] != "template" or not args[1].startswith("--uid=") or args[2] != "--":
        raise SystemExit("usage: isolate.py template --uid=N -- ARGV...")
    code = _template_stage(int(args[1].removeprefix("--uid=")), args[3:])
    sys.exit(code if code >= 0 else 128 - code)
