"""Does anything listen on a TCP port in this network namespace? Asked of the kernel's sock_diag over netlink.

An in-sandbox program (standard library only, loaded by path beside ``supervisor.py``): a cold start's supervisor
asks it to say when the agent listens, and a session forked at a loop entry asks it the same (``zygote.py``). It
is its own module because it is the one piece of raw netlink code in the sandbox and two programs share it.
"""

from __future__ import annotations

import socket
import struct

NETLINK_SOCK_DIAG, SOCK_DIAG_BY_FAMILY, TCP_LISTEN, DUMP_FLAGS = 4, 20, 10, 0x301  # NLM_F_REQUEST | NLM_F_DUMP
NLMSG_ERROR, NLMSG_DONE = 2, 3
NLMSG_HEADER = struct.Struct("=IHHII")  # length, type, flags, seq, pid
DIAG_REQUEST = struct.Struct("=BBBBI")  # inet_diag_req_v2: family, protocol, ext, pad, states; then the socket id
DIAG_SOCKID_SIZE = 48  # sport, dport, src[16], dst[16], interface, cookie[2]: all zero, a dump matches any
PORT = struct.Struct(">H")


def listening(port: int) -> bool:
    """Something listens on TCP ``port`` (v4 or v6) in this network namespace, asked of the kernel's sock_diag as
    ``ss -ltn`` does: only the listening sockets are walked and the agent sees no probe connection. (Reading
    /proc/net/tcp walks every established-socket bucket of the host: ~18 ms a read here.) OSError where the kernel
    has no sock_diag (gVisor).
    """
    with socket.socket(socket.AF_NETLINK, socket.SOCK_DGRAM, NETLINK_SOCK_DIAG) as sock:
        for family in (socket.AF_INET, socket.AF_INET6):
            request = DIAG_REQUEST.pack(family, socket.IPPROTO_TCP, 0, 0, 1 << TCP_LISTEN) + bytes(DIAG_SOCKID_SIZE)
            sock.send(
                NLMSG_HEADER.pack(NLMSG_HEADER.size + len(request), SOCK_DIAG_BY_FAMILY, DUMP_FLAGS, 0, 0) + request
            )
            if _dump_has_port(sock, port):
                return True
    return False


def _dump_has_port(sock: socket.socket, port: int) -> bool:
    """Read one sock_diag dump to its end; True if a socket in it has ``port`` as its source port."""
    found = False
    while True:
        data = sock.recv(65536)
        offset = 0
        while offset + NLMSG_HEADER.size <= len(data):
            length, kind, _, _, _ = NLMSG_HEADER.unpack_from(data, offset)
            if kind in (NLMSG_DONE, NLMSG_ERROR) or length < NLMSG_HEADER.size:
                return found
            # inet_diag_msg: family, state, timer, retrans (1 byte each), then the socket id: sport first (BE)
            found = found or PORT.unpack_from(data, offset + NLMSG_HEADER.size + 4)[0] == port
            offset += (length + 3) & ~3
