"""namespace/network.py's link lifecycle: what ``create`` makes, ``delete`` removes, whatever is already gone.

``create`` and ``delete`` run for every sandbox with egress, through netlink from the calling thread (no ``ip``
process); these tests pin that nothing of the sandbox's networking survives ``delete``, that it tolerates a
half-removed sandbox (a crash between the two steps, or a kernel that already took the veth with its namespace),
that what ``create`` makes is what ``ip`` made (no IPv6 address on either end, the default route via the host end),
and that the thread that made it is back in the host's namespace afterwards.
"""

from __future__ import annotations

import os
import subprocess
import threading
import time
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


def _ip(*args: str) -> str:
    return subprocess.run(["ip", *args], capture_output=True, check=True, text=True).stdout


def _own_netns() -> str:
    return os.readlink(f"/proc/self/task/{threading.get_native_id()}/ns/net")


def test_create_makes_what_ip_made_and_the_thread_comes_back(link: network.Link) -> None:
    made: list[str] = []  # a worker thread's namespace before and after, as asyncio.to_thread runs it

    def in_a_thread() -> None:
        other = network.plan("nettest", uuid.uuid4().hex[:12], SLOT + 1)
        made.append(_own_netns())
        network.create(other)
        made.append(_own_netns())
        network.delete(other.netns, other.host_if)

    worker = threading.Thread(target=in_a_thread)
    worker.start()
    worker.join()
    assert len(made) == 2 and made[0] == made[1] == _own_netns()
    for args in (["-n", link.netns, "addr", "show", "dev", "eth0"], ["addr", "show", "dev", link.host_if]):
        shown = _ip(*args)
        assert "inet6" not in shown and "state UP" in shown
    assert f"inet {link.sandbox_ip}/30" in _ip("-n", link.netns, "addr", "show", "dev", "eth0")
    assert f"inet {link.host_ip}/30" in _ip("addr", "show", "dev", link.host_if)
    assert "addrgenmode none" in _ip("-d", "-n", link.netns, "link", "show", "dev", "eth0")
    assert "addrgenmode none" in _ip("-d", "link", "show", "dev", link.host_if)
    assert f"default via {link.host_ip} dev eth0" in _ip("-n", link.netns, "route")
    assert "UP" in _ip("-n", link.netns, "link", "show", "dev", "lo").split(">")[0]


def test_attach_names_the_namespace_of_a_forked_session() -> None:
    made = network.plan("nettest", uuid.uuid4().hex[:12], SLOT + 2)
    owner = subprocess.Popen(["unshare", "--net", "sleep", "60"])
    try:
        target = f"/proc/{owner.pid}/ns/net"
        host = os.readlink("/proc/self/ns/net")
        deadline = time.monotonic() + 30
        while os.readlink(target) == host and time.monotonic() < deadline:  # until unshare(1) made its namespace
            time.sleep(0.01)
        network.create(made, owner_pid=owner.pid)
        assert os.stat(made.netns_path).st_ino == os.stat(target).st_ino
        assert made.sandbox_ip in _ip("-n", made.netns, "-4", "addr", "show", "dev", "eth0")
    finally:
        owner.kill()
        owner.wait()
        network.delete(made.netns, made.host_if)
    assert _exists(made) == (False, False)


def test_a_name_in_use_is_refused_and_left_alone(link: network.Link) -> None:
    with pytest.raises(network.NetworkError):
        network.create(link)
    assert _exists(link) == (True, True)
    assert link.sandbox_ip in _ip("-n", link.netns, "-4", "addr", "show", "dev", "eth0")
