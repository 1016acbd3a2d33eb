"""Compile the seccomp policy (``sandbox/profiles/seccomp-<arch>.json``, policy as data) to a BPF program.

libseccomp (Debian ``libseccomp2``, present wherever bwrap is) does the compiling through a minimal ctypes binding:
it knows every architecture's syscall numbers and emits the architecture checks, so a syscall made through a
foreign ABI (i386 ``int 0x80`` on x86_64) is killed instead of slipping past the table. bwrap loads the result
(``--seccomp FD``) right before it execs the supervisor, after its own mounts.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import errno
import json
import os
import platform
from dataclasses import dataclass
from functools import cache
from pathlib import Path

PROFILES = Path(__file__).resolve().parent.parent / "profiles"
ARCH_TOKENS = {"x86_64": 0xC000003E, "aarch64": 0xC00000B7}  # AUDIT_ARCH_* values, libseccomp's SCMP_ARCH_*
ACT_ALLOW = 0x7FFF0000
ACT_ERRNO = 0x00050000
ACT_KILL_PROCESS = 0x80000000
SCMP_CMP_MASKED_EQ = 7
NR_SCMP_ERROR = -1
CLONE_FLAGS = {
    "CLONE_NEWNS": 0x00020000,
    "CLONE_NEWCGROUP": 0x02000000,
    "CLONE_NEWUTS": 0x04000000,
    "CLONE_NEWIPC": 0x08000000,
    "CLONE_NEWUSER": 0x10000000,
    "CLONE_NEWPID": 0x20000000,
    "CLONE_NEWNET": 0x40000000,
}


class _ArgCmp(ctypes.Structure):
    _fields_ = [
        ("arg", ctypes.c_uint),
        ("op", ctypes.c_int),
        ("datum_a", ctypes.c_uint64),
        ("datum_b", ctypes.c_uint64),
    ]


class PolicyError(ValueError):
    """The JSON policy is malformed, names an unknown syscall, or is redundant."""


@dataclass(frozen=True)
class Rule:
    syscall: str
    action: int
    flags: tuple[int, ...] = ()  # clone flags: the rule matches when any of these bits is set in argument 0


def machine_arch() -> str:
    arch = platform.machine()
    return {"amd64": "x86_64", "arm64": "aarch64"}.get(arch, arch)


def policy_path(arch: str) -> Path:
    return PROFILES / f"seccomp-{arch}.json"


def load_policy(arch: str, path: Path | None = None) -> list[Rule]:
    """Parse and lint one policy file: known actions, errnos and flags, no syscall listed twice."""
    path = path or policy_path(arch)
    doc = json.loads(path.read_text())
    if doc.get("arch") != arch or doc.get("default_action") != "allow":
        raise PolicyError(f"{path.name}: arch must be {arch!r} and default_action 'allow'")
    rules: list[Rule] = []
    seen: set[str] = set()
    for entry in doc["rules"]:
        if not entry.get("why"):
            raise PolicyError(f"rule for {entry.get('syscalls')} says no 'why'")
        if entry.get("action") != "errno":
            raise PolicyError(f"unknown action {entry.get('action')!r}")
        code = getattr(errno, str(entry.get("errno")), None)
        if not isinstance(code, int):
            raise PolicyError(f"unknown errno {entry.get('errno')!r}")
        flags = tuple(CLONE_FLAGS[name] for name in entry.get("arg0_any_flag", ()))
        for syscall in entry["syscalls"]:
            if syscall in seen:
                raise PolicyError(f"{syscall} is listed twice")
            seen.add(syscall)
            rules.append(Rule(syscall, ACT_ERRNO | code, flags))
    return rules


@cache
def _libseccomp() -> ctypes.CDLL:
    name = ctypes.util.find_library("seccomp") or "libseccomp.so.2"
    # SAFETY: loading the system libseccomp; every function used below gets its exact C signature here.
    lib = ctypes.CDLL(name, use_errno=True)
    lib.seccomp_init.restype = ctypes.c_void_p
    lib.seccomp_init.argtypes = [ctypes.c_uint32]
    lib.seccomp_release.argtypes = [ctypes.c_void_p]
    lib.seccomp_syscall_resolve_name_arch.restype = ctypes.c_int
    lib.seccomp_syscall_resolve_name_arch.argtypes = [ctypes.c_uint32, ctypes.c_char_p]
    lib.seccomp_rule_add_exact_array.restype = ctypes.c_int
    lib.seccomp_rule_add_exact_array.argtypes = [
        ctypes.c_void_p,
        ctypes.c_uint32,
        ctypes.c_int,
        ctypes.c_uint,
        ctypes.POINTER(_ArgCmp),
    ]
    lib.seccomp_arch_native.restype = ctypes.c_uint32
    lib.seccomp_export_bpf.restype = ctypes.c_int
    lib.seccomp_export_bpf.argtypes = [ctypes.c_void_p, ctypes.c_int]
    return lib


def available() -> bool:
    try:
        _libseccomp()
    except OSError:
        return False
    return True


def resolve(arch: str, syscall: str) -> int:
    """The syscall's number on ``arch`` (PolicyError when libseccomp does not know it there)."""
    # SAFETY: a pure table lookup in libseccomp; the name is a NUL-terminated bytes object we own.
    number = _libseccomp().seccomp_syscall_resolve_name_arch(ARCH_TOKENS[arch], syscall.encode())
    if number == NR_SCMP_ERROR:
        raise PolicyError(f"{syscall} is not a syscall on {arch}")
    return int(number)


# A warm template's filter: the session policy less what a forked session needs to isolate itself (unshare its
# namespaces, mount its tmpfs and /proc). Sessions then stack the full policy on top before any agent code runs.
TEMPLATE_ALLOWS = frozenset({"mount", "umount2", "unshare"})


@cache
def compile_bpf(arch: str | None = None, allow: frozenset[str] = frozenset()) -> bytes:
    """The native policy as a classic-BPF program (``struct sock_filter`` array), ready for bwrap ``--seccomp``.

    ``allow``: syscalls whose rules are left out (``TEMPLATE_ALLOWS`` for warm templates)."""
    arch = arch or machine_arch()
    lib = _libseccomp()
    if lib.seccomp_arch_native() != ARCH_TOKENS.get(arch):
        raise PolicyError(f"can only compile the native architecture's policy, not {arch}")
    rules = [rule for rule in load_policy(arch) if rule.syscall not in allow]
    # SAFETY: seccomp_init only allocates a filter context; it is released in the finally below.
    ctx = lib.seccomp_init(ACT_ALLOW)
    if not ctx:
        raise OSError("seccomp_init failed")
    try:
        for rule in rules:
            number = resolve(arch, rule.syscall)
            masks: list[_ArgCmp | None] = [_ArgCmp(0, SCMP_CMP_MASKED_EQ, flag, flag) for flag in rule.flags]
            for cmp in masks or [None]:
                count, ref = (1, ctypes.byref(cmp)) if cmp is not None else (0, None)
                # SAFETY: ctx is live, the comparison struct outlives the call, count matches the array length.
                rc = lib.seccomp_rule_add_exact_array(ctx, rule.action, number, count, ref)
                if rc < 0:
                    raise PolicyError(f"libseccomp refused the rule for {rule.syscall}: {os.strerror(-rc)}")
        read_fd, write_fd = os.pipe()
        try:
            # SAFETY: exports into a pipe we own; 64 KiB of pipe buffer holds far more than this filter needs.
            rc = lib.seccomp_export_bpf(ctx, write_fd)
            os.close(write_fd)
            write_fd = -1
            if rc < 0:
                raise OSError(-rc, f"seccomp_export_bpf: {os.strerror(-rc)}")
            chunks = []
            while chunk := os.read(read_fd, 65536):
                chunks.append(chunk)
        finally:
            os.close(read_fd)
            if write_fd >= 0:
                os.close(write_fd)
    finally:
        # SAFETY: ctx came from seccomp_init above and is not used after this.
        lib.seccomp_release(ctx)
    program = b"".join(chunks)
    if not program or len(program) % 8:
        raise PolicyError(f"libseccomp produced an invalid program ({len(program)} bytes)")
    return program
