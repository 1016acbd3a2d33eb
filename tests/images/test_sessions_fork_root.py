"""The root a forked image session would switch to (issue 10 point 5, not wired into templates yet): the host builds
each fork's own overlay (lower: the image store's rootfs ID-mapped to the fork's leased uid, upper: the fork's own
tmpfs), hands it over as a detached mount (``open_tree``), and the fork, already in its own user and mount
namespaces with the host's uid map, attaches it (``move_mount``) and pivots into it.

This pins the kernel mechanism and Hangar's ``image_root.attach_idmapped`` the fork path needs: two forks each write
to ``/`` without seeing each other, the image's files are the image user's inside, and copy-up of an image file
works. It also pins why image sessions start cold today: the warm template's seccomp filter
(``seccomp.TEMPLATE_ALLOWS``) denies ``move_mount``/``pivot_root``, so a fork of it cannot switch root.
"""

from __future__ import annotations

import ctypes
import json
import os
import shutil
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from hangar.sandbox import isolate
from hangar.sandbox.namespace import image_root, seccomp
from hangar.sandbox.namespace.rootfs import _libc
from hangar.sandbox.selection import namespace_unsupported_reason
from tests.sandbox.fixtures import world_readable_dir
from tests.support.agents.image_rootfs import busybox_rootfs

pytestmark = pytest.mark.skipif(namespace_unsupported_reason() is not None, reason=str(namespace_unsupported_reason()))

TEMPLATE_UID = 64990  # the template's uid: the fork starts as it, without capabilities, before its own namespaces
FORK_UIDS = (64991, 64992)
OPEN_TREE_CLONE, OPEN_TREE_CLOEXEC, AT_RECURSIVE = 0x1, 0o2000000, 0x8000
SYS_OPEN_TREE = 428
ISOLATE = str(Path(isolate.__file__))

# The fork's side: drop to the template's uid (no capabilities, no_new_privs), load the given filter, unshare user and
# mount namespaces, wait for the host's map and the root's fd, attach it, pivot, write to "/", report what it sees.
CHILD = r"""
import ctypes, importlib.util, json, os, socket, sys
spec = importlib.util.spec_from_file_location("isolate", sys.argv[3])  # stdlib only, as the zygote loads it
isolate = importlib.util.module_from_spec(spec)
spec.loader.exec_module(isolate)
libc = isolate.libc()
sock = socket.socket(fileno=int(sys.argv[1]))
name = sys.argv[2]
out = {}
try:
    os.setgroups([]); os.setresgid(*[int(sys.argv[4])] * 3); os.setresuid(*[int(sys.argv[4])] * 3)
    isolate.prctl(isolate.PR_SET_NO_NEW_PRIVS, 1)
    isolate.load_seccomp(bytes.fromhex(sys.argv[5]))
    isolate.unshare(isolate.CLONE_NEWUSER | isolate.CLONE_NEWNS)
    sock.send(b"U")
    _, fds, _, _ = socket.recv_fds(sock, 16, 1)
    os.setresgid(0, 0, 0); os.setresuid(0, 0, 0)
    isolate.mount(None, "/", None, isolate.MS_REC | isolate.MS_PRIVATE)
    os.chdir(sys.argv[6])
    if libc.syscall(429, fds[0], b"", -100, b".", 4) != 0:  # move_mount(fd, "", AT_FDCWD, ".", F_EMPTY_PATH)
        raise OSError(ctypes.get_errno(), "denied", "move_mount")
    os.chdir(sys.argv[6])  # into the mount just attached on the stage directory
    if libc.syscall(155, b".", b".") != 0:  # pivot_root(".", "."): the old root stacks on the new one
        raise OSError(ctypes.get_errno(), "denied", "pivot_root")
    isolate._check(libc.umount2(b".", isolate.MNT_DETACH), "umount the old root")
    os.chdir("/")
    with open(f"/written-by-{name}", "w") as mine:
        mine.write(name)
    with open("/bin/busybox", "ab"):
        pass  # copy-up of an image file into this fork's upper layer
    out = {"root": sorted(os.listdir("/")), "image_owner": os.stat("/bin/busybox").st_uid,
           "mine_owner": os.stat(f"/written-by-{name}").st_uid}
except OSError as exc:
    out = {"failed": str(exc), "errno": exc.errno, "step": exc.filename}
sock.send(json.dumps(out).encode())
"""


@pytest.fixture(scope="module")
def image() -> Iterator[Path]:
    base = world_readable_dir("hangar-test-forkroot-")
    yield busybox_rootfs(base / "rootfs")
    shutil.rmtree(base, ignore_errors=True)


def _check(result: int, what: str) -> int:
    if result < 0 or (what.startswith("mount") and result != 0):
        err = ctypes.get_errno()
        raise OSError(err, f"{what}: {os.strerror(err)}")
    return result


class ForkRoot:
    """One fork's root built by the host: tmpfs, ID-mapped lower, overlay; ``detached()`` is what the fork gets."""

    def __init__(self, base: Path, uid: int) -> None:
        self.base = base
        base.mkdir(mode=0o755)
        self.rw, self.lower, self.merged = base / "rw", base / "lower", base / "root"
        for path in (self.rw, self.lower, self.merged):
            path.mkdir(mode=0o755)
        self.uid = uid

    def build(self, rootfs: Path) -> None:
        libc = _libc()
        _check(libc.mount(b"hangar-test", str(self.rw).encode(), b"tmpfs", 0, b"size=8m,mode=0755"), "mount tmpfs")
        (self.rw / "upper").mkdir()
        (self.rw / "work").mkdir()
        os.chown(self.rw / "upper", self.uid, self.uid)
        image_root.attach_idmapped(rootfs, self.lower, self.uid)
        options = f"lowerdir={self.lower},upperdir={self.rw}/upper,workdir={self.rw}/work".encode()
        _check(libc.mount(b"hangar-test", str(self.merged).encode(), b"overlay", 0, options), "mount overlay")

    def detached(self) -> int:
        flags = OPEN_TREE_CLONE | OPEN_TREE_CLOEXEC | AT_RECURSIVE
        return _check(_libc().syscall(SYS_OPEN_TREE, -100, str(self.merged).encode(), flags), "open_tree")

    def remove(self) -> None:
        for path in (self.merged, self.lower, self.rw):
            _libc().umount2(str(path).encode(), 2)
        shutil.rmtree(self.base, ignore_errors=True)


def fork_into(root: ForkRoot, name: str, program: bytes, stage: Path) -> dict[str, object]:
    """Run one fork: it unshares, the host maps uid 0 to the fork's uid and sends the root, the fork reports."""
    host, child = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    argv = [sys.executable, "-I", "-S", "-c", CHILD, str(child.fileno()), name, ISOLATE, str(TEMPLATE_UID)]
    proc = subprocess.Popen([*argv, program.hex(), str(stage)], pass_fds=(child.fileno(),))
    child.close()
    try:
        host.settimeout(20)
        first = host.recv(65536)
        if first != b"U":
            return json.loads(first)
        for table in ("uid_map", "gid_map"):
            with open(f"/proc/{proc.pid}/{table}", "w") as mapping:
                mapping.write(f"0 {root.uid} 1\n")
        fd = root.detached()
        try:
            socket.send_fds(host, [b"root"], [fd])
        finally:
            os.close(fd)
        return json.loads(host.recv(65536))
    finally:
        host.close()
        proc.wait(timeout=20)


@pytest.fixture
def roots(image: Path, tmp_path: Path) -> Iterator[tuple[list[ForkRoot], Path]]:
    base = world_readable_dir("hangar-test-forkroots-")
    built = [ForkRoot(base / f"fork{n}", uid) for n, uid in enumerate(FORK_UIDS)]
    stage = base / "stage"
    stage.mkdir(mode=0o755)
    try:
        for root in built:
            root.build(image)
        yield built, stage
    finally:
        for root in built:
            root.remove()
        shutil.rmtree(base, ignore_errors=True)


def test_each_fork_switches_to_its_own_overlay_of_the_image(roots: tuple[list[ForkRoot], Path]) -> None:
    built, stage = roots
    program = seccomp.compile_bpf(allow=seccomp.TEMPLATE_ALLOWS | {"move_mount", "pivot_root"})
    seen = [fork_into(root, f"fork{n}", program, stage) for n, root in enumerate(built)]
    for n, (root, report) in enumerate(zip(built, seen, strict=True)):
        assert "failed" not in report, report
        root_listing = report["root"]
        assert isinstance(root_listing, list) and "srv" in root_listing and "app" in root_listing
        assert f"written-by-fork{n}" in root_listing and f"written-by-fork{1 - n}" not in root_listing
        assert report["image_owner"] == report["mine_owner"] == 0  # the image's files are its user's (here root)
        upper = root.rw / "upper"
        assert sorted(os.listdir(upper)) == ["bin", f"written-by-fork{n}"]  # the write and the copy-up, nothing else
        assert os.stat(upper / f"written-by-fork{n}").st_uid == root.uid  # on the host: the fork's leased uid
    assert not (stage / "bin").exists()  # nothing landed on the stage directory in the host's mount namespace


def test_the_warm_templates_filter_denies_switching_root(roots: tuple[list[ForkRoot], Path]) -> None:
    """Why image sessions start cold today: a fork of a template cannot attach a root (EPERM from the filter)."""
    built, stage = roots
    report = fork_into(built[0], "fork0", seccomp.compile_bpf(allow=seccomp.TEMPLATE_ALLOWS), stage)
    assert report.get("step") == "move_mount" and report.get("errno") == 1, report
    assert os.listdir(built[0].rw / "upper") == []
