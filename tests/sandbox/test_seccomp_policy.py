"""The seccomp policy is data: load and lint both architectures' files, and compile the native one."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

seccomp = pytest.importorskip("hangar.sandbox.namespace.seccomp")

ARCHES = ("x86_64", "aarch64")
# What the brief promises an agent can never call (each architecture that has the syscall).
MUST_BLOCK = {
    "mount", "umount2", "pivot_root", "ptrace", "kexec_load", "kexec_file_load", "bpf", "keyctl", "add_key",
    "request_key", "init_module", "finit_module", "delete_module", "perf_event_open", "userfaultfd", "unshare",
    "setns", "open_by_handle_at", "swapon", "swapoff", "reboot", "acct", "quotactl", "clone3",
}  # fmt: skip


@pytest.mark.parametrize("arch", ARCHES)
def test_policy_lints_and_names_real_syscalls(arch: str) -> None:
    rules = seccomp.load_policy(arch)
    names = [rule.syscall for rule in rules]
    assert len(names) == len(set(names))
    for name in names:
        assert seccomp.resolve(arch, name) >= 0
    assert set(names) >= MUST_BLOCK
    clone = [rule for rule in rules if rule.syscall == "clone"]
    assert len(clone) == 1
    assert set(clone[0].flags) == set(seccomp.CLONE_FLAGS.values())


@pytest.mark.parametrize("arch", ARCHES)
def test_every_rule_says_why(arch: str) -> None:
    doc = json.loads(seccomp.policy_path(arch).read_text())
    assert all(rule["why"].strip() for rule in doc["rules"])


def test_lint_rejects_a_duplicate_and_an_unknown_syscall(tmp_path: Path) -> None:
    doc = json.loads(seccomp.policy_path("x86_64").read_text())
    doc["rules"].append({"why": "again", "action": "errno", "errno": "EPERM", "syscalls": ["mount"]})
    dup = tmp_path / "dup.json"
    dup.write_text(json.dumps(doc))
    with pytest.raises(seccomp.PolicyError, match="listed twice"):
        seccomp.load_policy("x86_64", dup)
    doc["rules"][-1]["syscalls"] = ["no_such_syscall"]
    unknown = tmp_path / "unknown.json"
    unknown.write_text(json.dumps(doc))
    with pytest.raises(seccomp.PolicyError, match="not a syscall"):
        for rule in seccomp.load_policy("x86_64", unknown):
            seccomp.resolve("x86_64", rule.syscall)


def test_native_policy_compiles_to_bpf() -> None:
    program = seccomp.compile_bpf()
    assert len(program) % 8 == 0
    # One instruction per syscall at least, plus the architecture checks.
    assert len(program) // 8 > len(seccomp.load_policy(seccomp.machine_arch()))
