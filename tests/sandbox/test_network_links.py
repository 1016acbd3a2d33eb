"""namespace/network.py's link lifecycle: what ``create`` makes, ``delete`` removes, whatever is already gone.

``delete`` runs on every stop of a sandbox with egress, with both removals in one ``ip`` process; these tests pin
that nothing of the sandbox's networking survives it and that it tolerates a half-removed sandbox (a crash between
the two steps, or a kernel that already took the veth with its namespace).
"""

from __future__ import annotations

import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from hangar.sandbox.namespace import network
from hangar.sandbox.selection import namespace_unsupported_reason

pytestmark = [
    pytest.mark.skipif(namespace_unsupported_reason() is not None, reason=str(namespace_unsupported_reason())),
]
SLOT = 16_300  # far above the slots a test server's uid leases use


def _exists(link: network.Link) -> tuple[bool, bool]:
    return Path("/sys/class/net", link.host_if).exists(), link.netns_path.exists()


@pytest.fixture
def link() -> Iterator[network.Link]:
    made = network.plan("nettest", uuid.uuid4().hex[:12], SLOT)
    network.create(made)
    try:
        yield made
    finally:
        network.delete(made.netns, made.host_if)


def test_create_then_delete_leaves_nothing(link: network.Link) -> None:
    assert _exists(link) == (True, True)
    inside = subprocess.run(["ip", "-n", link.netns, "-4", "addr", "show", "dev", "eth0"], capture_output=True)
    assert link.sandbox_ip in inside.stdout.decode()
    network.delete(link.netns, link.host_if)
    assert _exists(link) == (False, False)
    assert link.netns not in network.list_netns("hangar-nettest-")


def test_delete_finishes_a_half_removed_sandbox(link: network.Link) -> None:
    subprocess.run(["ip", "link", "del", link.host_if], check=True)  # the veth went first (crash, or the kernel)
    network.delete(link.netns, link.host_if)
    assert _exists(link) == (False, False)
    network.delete(link.netns, link.host_if)  # and again, with nothing left: no error
