"""The few rtnetlink requests and mount calls a sandbox's network needs, made from this process: no ``ip`` process.

Each ``ip`` process cost a process start (3 ms on a quiet 2-core host, 10 ms under load, two of them per session's
creation and one per stop: the largest part of the server's CPU per forked session, docs/performance.md "round
four"). The same operations as ``ip`` makes them, request for request: the netns file bound under a shared
``/run/netns``, the veth pair created with its peer in the netns, ``addrgenmode none`` before a link goes up, the
/30 address, the default route. A netlink socket belongs to the network namespace of the thread that opens it, so
the socket for the sandbox's namespace is opened by a thread that enters it (``setns``) and goes straight back;
nothing else runs there. pyroute2 was considered: it forks a helper process for every socket in another namespace.
"""

from __future__ import annotations

import contextlib
import ctypes
import fcntl
import ipaddress
import os
import socket
import struct
import threading
from collections.abc import Iterator
from pathlib import Path

CLONE_NEWNET = 0x40000000
MS_BIND, MS_REC, MS_SHARED = 0x1000, 0x4000, 1 << 20
MNT_DETACH = 2

NLMSG_ERROR = 2
NLM_F_REQUEST, NLM_F_ACK, NLM_F_EXCL, NLM_F_CREATE = 0x1, 0x4, 0x200, 0x400
RTM_NEWLINK, RTM_DELLINK, RTM_NEWADDR, RTM_NEWROUTE = 16, 17, 20, 24
IFLA_IFNAME, IFLA_LINKINFO, IFLA_NET_NS_FD, IFLA_AF_SPEC = 3, 18, 28, 26
IFLA_INFO_KIND, IFLA_INFO_DATA, VETH_INFO_PEER = 1, 2, 1
IFLA_INET6_ADDR_GEN_MODE, IN6_ADDR_GEN_MODE_NONE = 8, 1
IFA_ADDRESS, IFA_LOCAL = 1, 2
RTA_GATEWAY = 5
RT_TABLE_MAIN, RTPROT_BOOT, RT_SCOPE_UNIVERSE, RTN_UNICAST = 254, 3, 0, 1
IFF_UP = 0x1
LOOPBACK_INDEX = 1

_libc = ctypes.CDLL(None, use_errno=True)


class NetlinkError(OSError):
    """The kernel refused a request (errno and the request's name)."""


def _attr(kind: int, payload: bytes) -> bytes:
    length = 4 + len(payload)
    return struct.pack("=HH", length, kind) + payload + b"\0" * (-length % 4)


def _ifinfo(index: int = 0, flags: int = 0, change: int = 0) -> bytes:
    return struct.pack("=BxHiII", socket.AF_UNSPEC, 0, index, flags, change)


def _name(ifname: str) -> bytes:
    return _attr(IFLA_IFNAME, ifname.encode() + b"\0")


class Rtnl:
    """One rtnetlink socket (in the namespace it was opened in); every request waits for the kernel's ack."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.seq = 0

    def close(self) -> None:
        self.sock.close()

    def request(self, kind: int, flags: int, body: bytes, what: str) -> None:
        self.seq += 1
        header = struct.pack("=IHHII", 16 + len(body), kind, NLM_F_REQUEST | NLM_F_ACK | flags, self.seq, 0)
        self.sock.send(header + body)
        while True:
            data = self.sock.recv(65536)
            offset = 0
            while offset + 16 <= len(data):
                length, msg_type, _, seq, _ = struct.unpack_from("=IHHII", data, offset)
                if msg_type == NLMSG_ERROR and seq == self.seq:
                    (code,) = struct.unpack_from("=i", data, offset + 16)
                    if code:
                        raise NetlinkError(-code, f"{what}: {os.strerror(-code)}")
                    return
                offset += max(length + (-length % 4), 16)

    def veth(self, host_if: str, peer: str, netns_fd: int) -> None:
        """``ip link add HOST type veth peer name PEER netns NS``."""
        peer_info = _ifinfo() + _name(peer) + _attr(IFLA_NET_NS_FD, struct.pack("=I", netns_fd))
        info = _attr(IFLA_INFO_KIND, b"veth") + _attr(IFLA_INFO_DATA, _attr(VETH_INFO_PEER, peer_info))
        body = _ifinfo() + _name(host_if) + _attr(IFLA_LINKINFO, info)
        self.request(RTM_NEWLINK, NLM_F_CREATE | NLM_F_EXCL, body, f"link add {host_if}")

    def no_addrgen(self, ifname: str) -> None:
        """``ip link set dev IF addrgenmode none``: no IPv6 address is ever generated (set before the link is up)."""
        mode = _attr(IFLA_INET6_ADDR_GEN_MODE, struct.pack("=B", IN6_ADDR_GEN_MODE_NONE))
        spec = _attr(IFLA_AF_SPEC, _attr(socket.AF_INET6, mode))
        self.request(RTM_NEWLINK, 0, _ifinfo() + _name(ifname) + spec, f"link set dev {ifname} addrgenmode none")

    def up(self, ifname: str) -> None:
        body = _ifinfo(LOOPBACK_INDEX if ifname == "lo" else 0, IFF_UP, IFF_UP) + _name(ifname)
        self.request(RTM_NEWLINK, 0, body, f"link set dev {ifname} up")

    def address(self, ifname: str, address: str, prefix: int) -> None:
        index = self._index(ifname)
        packed = ipaddress.IPv4Address(address).packed
        body = struct.pack("=BBBBI", socket.AF_INET, prefix, 0, RT_SCOPE_UNIVERSE, index)
        body += _attr(IFA_LOCAL, packed) + _attr(IFA_ADDRESS, packed)
        self.request(RTM_NEWADDR, NLM_F_CREATE | NLM_F_EXCL, body, f"addr add {address}/{prefix} dev {ifname}")

    def default_route(self, gateway: str) -> None:
        body = struct.pack("=BBBBBBBBI", socket.AF_INET, 0, 0, 0, RT_TABLE_MAIN, RTPROT_BOOT, 0, RTN_UNICAST, 0)
        body += _attr(RTA_GATEWAY, ipaddress.IPv4Address(gateway).packed)
        self.request(RTM_NEWROUTE, NLM_F_CREATE | NLM_F_EXCL, body, f"route add default via {gateway}")

    def delete_link(self, ifname: str) -> None:
        """``ip link del IF``; a link already gone is fine."""
        with contextlib.suppress(NetlinkError):  # ENODEV: gone meanwhile (the kernel removes it with its netns)
            self.request(RTM_DELLINK, 0, _ifinfo() + _name(ifname), f"link del {ifname}")

    def _index(self, ifname: str) -> int:
        """The interface's index in this socket's namespace (an RTM_GETLINK would do the same in more code: the
        kernel answers SIOCGIFINDEX on any socket of the namespace, and this one is)."""
        request = struct.pack("=16s16x", ifname.encode())
        answer = fcntl.ioctl(self.sock.fileno(), 0x8933, request)  # SIOCGIFINDEX
        return int(struct.unpack_from("=i", answer, 16)[0])


def _socket() -> socket.socket:
    return socket.socket(socket.AF_NETLINK, socket.SOCK_RAW | socket.SOCK_CLOEXEC, socket.NETLINK_ROUTE)


@contextlib.contextmanager
def host() -> Iterator[Rtnl]:
    rtnl = Rtnl(_socket())
    try:
        yield rtnl
    finally:
        rtnl.close()


@contextlib.contextmanager
def inside(netns_path: Path) -> Iterator[Rtnl]:
    """A socket in the namespace bound at ``netns_path``: this thread enters it, opens the socket, goes back."""
    target = os.open(netns_path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        with _entered(target):
            sock = _socket()
    finally:
        os.close(target)
    rtnl = Rtnl(sock)
    try:
        yield rtnl
    finally:
        rtnl.close()


def _own_netns() -> str:
    return f"/proc/self/task/{threading.get_native_id()}/ns/net"


@contextlib.contextmanager
def _coming_back() -> Iterator[None]:
    """This thread back in its own network namespace after the block (threads have their own, unlike mounts)."""
    home = os.open(_own_netns(), os.O_RDONLY | os.O_CLOEXEC)
    try:
        yield
    finally:
        # A worker thread left in a sandbox's namespace would open the next sockets there: never go on.
        if _libc.setns(home, CLONE_NEWNET) != 0:
            os.abort()
        os.close(home)


@contextlib.contextmanager
def _entered(netns_fd: int) -> Iterator[None]:
    with _coming_back():
        _check(_libc.setns(netns_fd, CLONE_NEWNET), "setns")
        yield


def _check(result: int, what: str) -> None:
    if result != 0:
        code = ctypes.get_errno()
        raise OSError(code, f"{what}: {os.strerror(code)}")


def _share_rundir(rundir: Path) -> None:
    """``/run/netns`` a shared mount, as ``ip netns`` makes it (so a bound namespace shows in every mount
    namespace that has it), bound onto itself first when it is not a mount point yet."""
    rundir.mkdir(mode=0o755, parents=True, exist_ok=True)
    path = str(rundir).encode()
    if _libc.mount(b"", path, b"none", MS_SHARED | MS_REC, None) == 0:
        return
    _check(_libc.mount(path, path, b"none", MS_BIND | MS_REC, None), f"mount --bind {rundir}")
    _check(_libc.mount(b"", path, b"none", MS_SHARED | MS_REC, None), f"mount --make-shared {rundir}")


_shared: set[Path] = set()
_shared_lock = threading.Lock()


def bind_netns(path: Path, owner_pid: int | None) -> None:
    """``ip netns attach NAME PID`` (the namespace of ``owner_pid``) or ``ip netns add NAME`` (a new one)."""
    with _shared_lock:
        if path.parent not in _shared:
            _share_rundir(path.parent)
            _shared.add(path.parent)
    os.close(os.open(path, os.O_RDONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0))
    try:
        if owner_pid is not None:
            source = f"/proc/{owner_pid}/ns/net"
            _check(_libc.mount(source.encode(), str(path).encode(), b"none", MS_BIND, None), f"bind {source}")
            return
        with _coming_back():
            _check(_libc.unshare(CLONE_NEWNET), "unshare")
            source = _own_netns()
            _check(_libc.mount(source.encode(), str(path).encode(), b"none", MS_BIND, None), f"bind {source}")
    except BaseException:
        with contextlib.suppress(OSError):
            path.unlink()
        raise


def unbind_netns(path: Path) -> None:
    """``ip netns del NAME``: the namespace goes once nothing else holds it; a name already gone is fine."""
    _libc.umount2(str(path).encode(), MNT_DETACH)
    with contextlib.suppress(FileNotFoundError):
        path.unlink()
