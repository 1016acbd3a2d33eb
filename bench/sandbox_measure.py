"""Measure sandbox start, relay overhead and idle memory for each backend; prints numbers, asserts nothing.

Run as root from the repo: ``.venv/bin/python -m bench.sandbox_measure`` (it borrows the sandbox tests' agent
fixtures from ``tests/sandbox/fixtures.py``, so it runs from a checkout). Start is measured from ``start()`` to
the first 200 on /ping through ``socket_path``; relay overhead compares the same keep-alive GET /ping sent over the
sandbox's Unix socket (through the supervisor's relay) and straight to the agent's TCP port (process backend, where
the host can reach that port); memory is PSS summed over each idle sandbox's processes and MemAvailable's drop.
"""

from __future__ import annotations

import asyncio
import shutil
import socket
import statistics
import time
from collections.abc import Callable
from pathlib import Path

from tests.sandbox.fixtures import AgentFiles, make_backend, prepared_agent_files, wait_ping, world_readable_dir

from hangar.sandbox.base import Limits, Sandbox, SandboxBackend
from hangar.sandbox.selection import namespace_unsupported_reason

STARTS = 10
REQUESTS = 2000
IDLE = 8
REQUEST = b"GET /ping HTTP/1.1\r\nHost: agent\r\n\r\n"
# Hangar's defaults (HANGAR_SESSION_*): a CPU quota below one core would stretch the agent's import time.
LIMITS = Limits(memory_bytes=2048 << 20, cpus=1.0, pids=256, disk_bytes=512 << 20)


def request_loop(connect: Callable[[], socket.socket], count: int) -> list[float]:
    """Sequential keep-alive requests on one raw connection: no client library in the way."""
    sock = connect()
    samples = []
    try:
        for _ in range(count):
            began = time.perf_counter()
            sock.sendall(REQUEST)
            data = b""
            while b"\r\n\r\n" not in data:
                data += sock.recv(65536)
            head, _, body = data.partition(b"\r\n\r\n")
            length = int(next(x for x in head.split(b"\r\n") if x.lower().startswith(b"content-length")).split(b":")[1])
            while len(body) < length:
                body += sock.recv(65536)
            samples.append(time.perf_counter() - began)
    finally:
        sock.close()
    return samples


def unix(path: Path) -> Callable[[], socket.socket]:
    def connect() -> socket.socket:
        sock = socket.socket(socket.AF_UNIX)
        sock.connect(str(path))
        return sock

    return connect


def tcp(port: int) -> Callable[[], socket.socket]:
    return lambda: socket.create_connection(("127.0.0.1", port))


def pss_bytes(pids: list[int]) -> int:
    total = 0
    for pid in pids:
        try:
            for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
                if line.startswith("Pss:"):
                    total += int(line.split()[1]) * 1024
        except OSError:
            continue
    return total


def mem_available() -> int:
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemAvailable:"):
            return int(line.split()[1]) * 1024
    return 0


def sandbox_pids(sandbox: Sandbox) -> list[int]:
    cgroup = getattr(sandbox, "cgroup", None)
    if cgroup is not None:
        return list(cgroup.pids())
    from hangar.sandbox.state import session_members

    return session_members(sandbox.proc.pid)  # type: ignore[attr-defined]


def ms(values: list[float]) -> str:
    ordered = sorted(values)
    p90 = ordered[int(len(ordered) * 0.9) - 1]
    return f"median {statistics.median(values) * 1e3:.3f} ms, p90 {p90 * 1e3:.3f} ms (n={len(values)})"


async def measure(name: str, backend: SandboxBackend, files: AgentFiles) -> None:
    starts = []
    for _ in range(STARTS):
        began = time.perf_counter()
        sandbox = await backend.start(files.spec(limits=LIMITS))
        try:
            await wait_ping(sandbox)
            starts.append(time.perf_counter() - began)
        finally:
            await sandbox.stop()
    print(f"[{name}] start -> first /ping 200: {ms(starts)}")

    sandbox = await backend.start(files.spec(limits=LIMITS))
    try:
        await wait_ping(sandbox)
        request_loop(unix(sandbox.socket_path), 200)  # warm-up
        relayed = request_loop(unix(sandbox.socket_path), REQUESTS)
        print(f"[{name}] GET /ping over the socket (relay): {ms(relayed)}")
        port = sandbox.state.read_record().get("port")  # type: ignore[attr-defined]
        if isinstance(port, int):
            request_loop(tcp(port), 200)
            direct = request_loop(tcp(port), REQUESTS)
            print(f"[{name}] GET /ping straight to the agent's TCP port: {ms(direct)}")
            overhead = statistics.median(relayed) - statistics.median(direct)
            print(f"[{name}] relay overhead (median difference): {overhead * 1e6:.0f} us")
    finally:
        await sandbox.stop()

    before = mem_available()
    idle = [await backend.start(files.spec(limits=LIMITS)) for _ in range(IDLE)]
    try:
        for sandbox in idle:
            await wait_ping(sandbox)
        await asyncio.sleep(1.0)
        pss = [pss_bytes(sandbox_pids(s)) for s in idle]
        drop = (before - mem_available()) / IDLE
        print(
            f"[{name}] idle sandbox: PSS median {statistics.median(pss) / 2**20:.1f} MiB, "
            f"MemAvailable drop {drop / 2**20:.1f} MiB per sandbox (n={IDLE})"
        )
        reported = [(await s.stats()).memory_bytes for s in idle]
        print(f"[{name}] stats().memory_bytes median {statistics.median(reported) / 2**20:.1f} MiB")
    finally:
        for sandbox in idle:
            await sandbox.stop()


async def main() -> None:
    names = ["process"] + ([] if namespace_unsupported_reason() else ["namespace"])
    for files in prepared_agent_files():
        for name in names:
            root = world_readable_dir(f"hangar-measure-{name}-")
            try:
                await measure(name, make_backend(name, root), files)
            finally:
                await make_backend(name, root).cleanup_orphans()
                shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    asyncio.run(main())
