"""Egress for PUBLIC sandboxes: a network namespace per sandbox, a veth pair to the host, NAT out.

Each sandbox with egress owns the netns ``hangar-<tag>-<sandbox_id>`` (found by name after a crash) holding one end
of a veth pair called ``eth0``; the host end is ``hg<hash>`` (every sandbox link starts with ``hg``, which the
firewall matches). Addresses come from the uid lease, so they never collide: slot k of ``sandbox_pool`` is a /30,
host ``.1``, sandbox ``.2``. IPv6 stays off on both ends (no address is ever generated).

The firewall is data (``profiles/egress.json``) and lives in Hangar's own chains, replaced atomically:

* ``HANGAR-INPUT`` (from INPUT): anything arriving from ``hg+`` is refused, so a sandbox never reaches a host
  service, whatever address it binds (loopback is unreachable anyway: a packet to 127/8 from outside is martian).
* ``HANGAR-OUTPUT`` (from OUTPUT): the host opens no connection to a sandbox's address (the gateway uses the Unix
  socket), so no local user of the host can reach an agent's port around Hangar's authentication.
* ``HANGAR-FORWARD`` (from FORWARD): ``hg+`` to ``hg+`` refused (no sandbox reaches another), blocked
  destinations refused except DNS to the host's resolvers, the rest accepted; replies only when established.
* ``HANGAR-NAT`` (from nat POSTROUTING): the pool is masqueraded behind the host's address.
"""

from __future__ import annotations

import contextlib
import hashlib
import ipaddress
import json
import os
import subprocess
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

from hangar.sandbox.namespace import netlink

POLICY = Path(__file__).resolve().parent.parent / "profiles" / "egress.json"
NETNS_DIR = Path("/run/netns")
LINK_PREFIX = "hg"
IP_TIMEOUT_S = 10
REJECT = ["-j", "REJECT", "--reject-with", "icmp-admin-prohibited"]


class NetworkError(RuntimeError):
    """A host networking command failed."""


@dataclass(frozen=True)
class Link:
    netns: str
    host_if: str
    host_ip: str
    sandbox_ip: str
    prefix: int = 30

    @property
    def netns_path(self) -> Path:
        return NETNS_DIR / self.netns


def names(tag: str, sandbox_id: str) -> tuple[str, str]:
    """(netns, host interface) of a sandbox: derived from its name alone, so cleanup needs no memory."""
    digest = hashlib.sha256(f"{tag}/{sandbox_id}".encode()).hexdigest()[:10]
    return f"hangar-{tag}-{sandbox_id}", f"{LINK_PREFIX}{digest}"


def plan(tag: str, sandbox_id: str, slot: int) -> Link:
    pool = ipaddress.ip_network(load_policy()["sandbox_pool"])
    subnets = pool.num_addresses // 4
    if not 0 <= slot < subnets:
        raise NetworkError(f"slot {slot} is outside the sandbox pool {pool} ({subnets} subnets)")
    base = int(pool.network_address) + 4 * slot
    netns, host_if = names(tag, sandbox_id)
    return Link(
        netns=netns,
        host_if=host_if,
        host_ip=str(ipaddress.ip_address(base + 1)),
        sandbox_ip=str(ipaddress.ip_address(base + 2)),
    )


@cache
def load_policy() -> dict[str, Any]:  # parsed JSON, checked below
    policy = json.loads(POLICY.read_text())
    ipaddress.ip_network(policy["sandbox_pool"])
    for cidr in policy["blocked_destinations"]:
        ipaddress.ip_network(cidr)
    return dict(policy)


def create(link: Link, owner_pid: int | None = None) -> None:
    """The netns, the veth pair (no IPv6 on either end) and the sandbox's default route via the host end, through
    netlink from this thread (``netlink.py``: no ``ip`` process). A caller undoes a failed one with ``delete``.

    ``owner_pid``: a forked session made its own network namespace (owned by its user namespace); it is named by
    attaching it instead of creating a new one, so everything else (and cleanup) is the same."""
    try:
        netlink.bind_netns(link.netns_path, owner_pid)
        with netlink.host() as rtnl:
            netns_fd = os.open(link.netns_path, os.O_RDONLY | os.O_CLOEXEC)
            try:
                rtnl.veth(link.host_if, "eth0", netns_fd)
            finally:
                os.close(netns_fd)
            rtnl.no_addrgen(link.host_if)
            rtnl.address(link.host_if, link.host_ip, link.prefix)
            rtnl.up(link.host_if)
        with netlink.inside(link.netns_path) as rtnl:
            rtnl.no_addrgen("eth0")
            rtnl.address("eth0", link.sandbox_ip, link.prefix)
            rtnl.up("eth0")
            rtnl.up("lo")
            rtnl.default_route(link.host_ip)
    except OSError as exc:
        raise NetworkError(f"the sandbox network {link.netns} could not be made: {exc}") from exc


def link_exists(host_if: str) -> bool:
    return Path("/sys/class/net", host_if).exists()


def delete(netns: str, host_if: str, link: bool = True) -> None:
    """Remove a sandbox's link and netns; tolerates either being gone already. Netlink and umount from this thread
    (an ``ip`` process cost a process start, about 3 ms on a quiet 2-core host and 10 ms under load, per stop).

    ``link=False`` removes only the netns: the kernel then removes the veth with it (both ends) on its own, batched
    with other namespaces' teardown, instead of ``ip link del`` waiting for a network RCU grace period (~20 ms)."""
    # SAFETY: deletes only links and namespaces named after one of this installation's sandboxes.
    if link and link_exists(host_if):
        with netlink.host() as rtnl:
            rtnl.delete_link(host_if)
    netlink.unbind_netns(NETNS_DIR / netns)


def list_netns(prefix: str) -> list[str]:
    with contextlib.suppress(FileNotFoundError):
        return sorted(p.name for p in NETNS_DIR.iterdir() if p.name.startswith(prefix))
    return []


def host_resolvers(resolv_conf: Path = Path("/etc/resolv.conf")) -> list[str]:
    found = []
    with contextlib.suppress(OSError):
        for line in resolv_conf.read_text().splitlines():
            parts = line.split()
            if len(parts) >= 2 and parts[0] == "nameserver":
                with contextlib.suppress(ValueError):
                    if ipaddress.ip_address(parts[1]).version == 4:
                        found.append(parts[1])
    return found


def firewall_rules() -> dict[str, list[list[str]]]:
    """Every rule of Hangar's chains, per (table, chain): the policy file rendered for iptables."""
    policy = load_policy()
    pool = str(policy["sandbox_pool"])
    links = f"{LINK_PREFIX}+"
    forward: list[list[str]] = [
        ["-o", links, "-m", "conntrack", "--ctstate", "RELATED,ESTABLISHED", "-j", "ACCEPT"],
        ["-o", links, *REJECT],
        ["-i", links, "-o", links, *REJECT],
    ]
    if policy.get("allow_host_resolvers"):
        for resolver in host_resolvers():
            for proto in ("udp", "tcp"):
                forward.append(["-i", links, "-d", resolver, "-p", proto, "--dport", "53", "-j", "ACCEPT"])
    forward += [["-i", links, "-d", str(cidr), *REJECT] for cidr in policy["blocked_destinations"]]
    forward.append(["-i", links, "-j", "ACCEPT"])
    return {
        "filter/HANGAR-INPUT": [["-i", links, *REJECT]],
        "filter/HANGAR-OUTPUT": [
            ["-o", links, "-m", "conntrack", "--ctstate", "RELATED,ESTABLISHED", "-j", "ACCEPT"],
            ["-o", links, *REJECT],
        ],
        "filter/HANGAR-FORWARD": forward,
        "nat/HANGAR-NAT": [["-s", pool, "!", "-o", links, "-j", "MASQUERADE"]],
    }


JUMPS = {
    "filter/HANGAR-INPUT": "INPUT",
    "filter/HANGAR-OUTPUT": "OUTPUT",
    "filter/HANGAR-FORWARD": "FORWARD",
    "nat/HANGAR-NAT": "POSTROUTING",
}


def restore_payload(rules: dict[str, list[list[str]]]) -> str:
    """The chains in iptables-restore form: each table is replaced in one transaction, so another Hangar process
    rebuilding them never leaves a moment in which a chain is empty."""
    tables: dict[str, list[str]] = {}
    for key, chain_rules in rules.items():
        table, chain = key.split("/")
        lines = tables.setdefault(table, [])
        lines.insert(0, f":{chain} - [0:0]")  # declared: created if missing, emptied if present
        lines.extend(" ".join(["-A", chain, *rule]) for rule in chain_rules)
    return "".join(f"*{table}\n" + "\n".join(lines) + "\nCOMMIT\n" for table, lines in tables.items())


def install_firewall() -> None:
    """(Re)build Hangar's chains and make sure the host forwards; safe to call at every start."""
    rules = firewall_rules()
    # SAFETY: --noflush replaces only the HANGAR-* chains declared in the payload; other rules stay untouched.
    result = subprocess.run(
        ["iptables-restore", "-w", "--noflush"],
        input=restore_payload(rules).encode(),
        capture_output=True,
        timeout=IP_TIMEOUT_S,
        check=False,
    )
    if result.returncode != 0:
        raise NetworkError(f"iptables-restore: {result.stderr.decode(errors='replace').strip()}")
    for key in rules:
        table, chain = key.split("/")
        parent = JUMPS[key]
        if _iptables(["-t", table, "-C", parent, "-j", chain], check=False) != 0:
            _iptables(["-t", table, "-I", parent, "1", "-j", chain])
    # IPv6: no sandbox link has an address, and anything that still arrives from one is dropped.
    if _iptables(["-C", "INPUT", "-i", f"{LINK_PREFIX}+", "-j", "DROP"], check=False, v6=True) not in (0, None):
        _iptables(["-I", "INPUT", "1", "-i", f"{LINK_PREFIX}+", "-j", "DROP"], check=False, v6=True)
    # SAFETY: host-wide forwarding; HANGAR-FORWARD decides what a sandbox may send, and nothing else on this host
    # forwards unless its own rules allow it (documented in docs/sandbox.md, host changes).
    Path("/proc/sys/net/ipv4/ip_forward").write_text("1")


def _iptables(args: list[str], check: bool = True, v6: bool = False) -> int | None:
    tool = "ip6tables" if v6 else "iptables"
    try:
        # SAFETY: touches only Hangar's own HANGAR-* chains and the jumps to them (rules from profiles/egress.json).
        result = subprocess.run([tool, "-w", *args], capture_output=True, timeout=IP_TIMEOUT_S, check=False)
    except FileNotFoundError:
        if check:
            raise NetworkError(f"{tool} is not installed (Debian: iptables)") from None
        return None
    if check and result.returncode != 0:
        raise NetworkError(f"{tool} {' '.join(args)}: {result.stderr.decode(errors='replace').strip()}")
    return result.returncode
