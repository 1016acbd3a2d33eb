"""Egress of PUBLIC namespace sandboxes: NAT out to a (local, fake) internet, nothing else; deny and none cut it."""

from __future__ import annotations

import asyncio
import errno
import os
import shlex
import shutil
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

from hangar.sandbox.selection import namespace_unsupported_reason
from tests.sandbox.fixtures import AgentFiles, make_backend, run_exec, started, wait_ping, world_readable_dir
from tests.sandbox.wan import Wan, wan

pytestmark = [
    pytest.mark.anyio,
    pytest.mark.skipif(namespace_unsupported_reason() is not None, reason=str(namespace_unsupported_reason())),
]
__all__ = ["wan"]

CONNECT = """
import socket, sys
for target in sys.argv[1:]:
    host, port = target.rsplit(":", 1)
    s = socket.socket()
    s.settimeout(3)
    try:
        s.connect((host, int(port)))
        s.sendall(b"GET / HTTP/1.0\\r\\n\\r\\n")
        answer = b""
        while chunk := s.recv(65536):  # HTTP/1.0: the server closes after the body
            answer += chunk
        print(target, "OK", answer.split(b"\\r\\n\\r\\n", 1)[-1].decode(errors="replace"))
    except OSError as exc:
        print(target, type(exc).__name__, exc.errno)
    s.close()
"""


@pytest.fixture
def state_root() -> Iterator[Path]:
    root = world_readable_dir("hangar-egress-")
    yield root
    asyncio.run(make_backend("namespace", root).cleanup_orphans())
    shutil.rmtree(root, ignore_errors=True)


async def connect(sandbox: object, files: AgentFiles, *targets: str) -> dict[str, str]:
    command = f"{files.env_dir}/bin/python -c {shlex.quote(CONNECT)} {' '.join(targets)}"
    out, _, code, _ = await run_exec(sandbox, command)  # type: ignore[arg-type]
    assert code == 0
    return {line.split(" ", 1)[0]: line.split(" ", 1)[1] for line in out.decode().splitlines()}


async def test_public_sandbox_reaches_the_internet_through_nat_and_nothing_else(
    state_root: Path, agent_files: AgentFiles, wan: Wan
) -> None:
    from hangar.sandbox.namespace.network import NETNS_DIR

    backend = make_backend("namespace", state_root, egress="allow")
    async with (
        started(backend, agent_files.spec(network="public")) as sandbox,
        started(backend, agent_files.spec(network="public", port=8000)) as neighbour,
    ):
        await wait_ping(neighbour)
        link, other = sandbox.link, neighbour.link  # type: ignore[attr-defined]
        seen = await connect(
            sandbox,
            agent_files,
            f"{wan.server_ip}:{wan.port}",
            f"{link.host_ip}:22",
            f"{other.sandbox_ip}:8000",
            "169.254.169.254:80",
            "192.168.1.1:80",
        )
        assert seen[f"{wan.server_ip}:{wan.port}"] == f"OK {wan.host_ip}"  # masqueraded behind the host
        assert seen[f"{link.host_ip}:22"] == "OSError 113"  # the host itself: refused by HANGAR-INPUT
        assert seen[f"{other.sandbox_ip}:8000"] == "OSError 113"  # another sandbox: refused by HANGAR-FORWARD
        assert seen["169.254.169.254:80"] == "OSError 113"  # cloud metadata: a blocked destination
        assert seen["192.168.1.1:80"] == "OSError 113"
        assert (NETNS_DIR / link.netns).exists() and Path("/sys/class/net", link.host_if).exists()
        # Nobody on the host reaches the agent's port around the gateway: only the Unix socket leads in.
        with pytest.raises(OSError) as refused:
            socket.create_connection((link.sandbox_ip, 8080), timeout=3).close()
        assert refused.value.errno == errno.EHOSTUNREACH or "not permitted" in str(refused.value)
    assert not (NETNS_DIR / link.netns).exists()
    await backend.settle()  # the kernel removes the veth with its netns, after the stop
    assert not Path("/sys/class/net", link.host_if).exists()


async def test_a_stopped_sandbox_keeps_its_uid_lease_until_its_veth_is_gone(
    state_root: Path, agent_files: AgentFiles
) -> None:
    """A stop deletes only the netns and leaves the veth to the kernel; the uid lease names the sandbox's /30, so it
    stays held (cleanup_orphans included) while the veth exists, here kept alive by an open handle on the netns."""
    from hangar.sandbox.namespace.network import NETNS_DIR

    backend = make_backend("namespace", state_root, egress="allow")
    sandbox = await backend.start(agent_files.spec(network="public"))
    link, uid = sandbox.link, sandbox.uid  # type: ignore[attr-defined]
    held = os.open(NETNS_DIR / link.netns, os.O_RDONLY)  # a reference: the namespace, and its veth, outlive the stop
    try:
        await sandbox.stop()
        assert not (NETNS_DIR / link.netns).exists()
        await asyncio.sleep(0.5)
        assert Path("/sys/class/net", link.host_if).exists()
        assert backend.leases.holder(uid) == sandbox.id  # type: ignore[attr-defined]
        assert await backend.cleanup_orphans() == 0
        assert backend.leases.holder(uid) == sandbox.id  # type: ignore[attr-defined]
    finally:
        os.close(held)
    await backend.settle()
    assert not Path("/sys/class/net", link.host_if).exists()
    assert backend.leases.holder(uid) is None  # type: ignore[attr-defined]


@pytest.mark.parametrize(("egress", "network"), [("deny", "public"), ("allow", "none")])
async def test_deny_and_none_leave_only_loopback(
    state_root: Path, agent_files: AgentFiles, wan: Wan, egress: str, network: str
) -> None:
    backend = make_backend("namespace", state_root, egress=egress)
    async with started(backend, agent_files.spec(network=network)) as sandbox:
        await wait_ping(sandbox)
        assert sandbox.link is None  # type: ignore[attr-defined]
        seen = await connect(sandbox, agent_files, f"{wan.server_ip}:{wan.port}", "127.0.0.1:8080")
        assert seen[f"{wan.server_ip}:{wan.port}"] == "OSError 101"  # ENETUNREACH: no route at all
        assert seen["127.0.0.1:8080"].startswith("OK")  # its own agent, on its own loopback


async def test_orphaned_network_namespaces_are_removed(state_root: Path, agent_files: AgentFiles) -> None:
    from hangar.sandbox.namespace.network import NETNS_DIR

    crashed = make_backend("namespace", state_root, egress="allow")
    sandbox = await crashed.start(agent_files.spec(network="public"))
    link = sandbox.link  # type: ignore[attr-defined]
    assert (NETNS_DIR / link.netns).exists()
    # A second backend on the same state root knows nothing of it in memory: everything is an orphan to it.
    assert await make_backend("namespace", state_root, egress="allow").cleanup_orphans() == 1
    assert not (NETNS_DIR / link.netns).exists()
    assert not Path("/sys/class/net", link.host_if).exists()
    assert not sandbox.alive()
    await sandbox.stop()


def test_firewall_is_one_valid_transaction_per_table() -> None:
    import subprocess

    from hangar.sandbox.namespace import network

    payload = network.restore_payload(network.firewall_rules())
    assert payload.count("COMMIT") == 2  # filter and nat, each replaced atomically
    checked = subprocess.run(
        ["iptables-restore", "-w", "--noflush", "--test"], input=payload.encode(), capture_output=True, timeout=10
    )
    assert checked.returncode == 0, checked.stderr
