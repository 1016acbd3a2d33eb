"""A throwaway Ray cluster for the cluster tests, kept on loopback inside a network namespace with only ``lo``.

Why a namespace: Ray rewrites 127.0.0.1 to the host's routable address and its GCS listens on every interface
(spec/probes.md Part 2 section 1); in a namespace whose only interface is ``lo`` it stays on loopback.

``RayCluster.start()`` makes the namespace, moves the CALLING THREAD into it (``setns``: everything that thread
starts afterwards, ``hangar serve``, ``hangar node``, PostgreSQL, Ray's driver threads, is in it too, and its own
httpx and boto3 clients reach them on 127.0.0.1), then starts a Ray head with token auth (the token in a temp dir)
and the health-check settings that notice a dead node in about 2.6 s. ``start_node(...)`` starts a ``hangar node``;
``stop()`` stops nodes, then Ray (raylets first, gcs last), deletes the namespace and moves the thread back.

``RayCluster.start(hosts=True)``: nodes as separate hosts. The head's namespace gets a bridge (``HEAD_IP``, not only
``lo``) and the head binds to it; each ``start_node`` then makes a namespace of its own, joined to the bridge by a
veth pair with its own address (``SUBNET.11``, ``.12``, ...), starts a raylet there (``ray start --address``) and
runs ``hangar node`` in it (``nsenter --net``: only the network namespace differs, mounts and cgroups are the
host's). Node → head, gateway → node and node → gateway traffic crosses that link. Gateways must listen on the
bridge too (``HangarServer(extra_args=["--host", "0.0.0.0"])``; ``cluster.gateway_url(server)`` is its bridge URL).

Use it as a module-scoped fixture (Ray starts take seconds): ``ray_cluster`` below.
"""

from __future__ import annotations

import contextlib
import ctypes
import importlib.util
import os
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

import pytest

from tests.support.server import end_process, free_port, wait_serving

BIN = Path(sys.executable).parent
CLONE_NEWNET = 0x40000000
# One token per test process: a Ray driver may keep what it read first, and later modules start new clusters.
TOKEN = secrets.token_hex(32)
TOKEN_PATH = Path(tempfile.gettempdir()) / f"hangar-ray-token-{os.getpid()}"
LOCAL_INDEX = Path(os.environ.get("HANGAR_TEST_LOCAL_INDEX", "/opt/pypi/simple"))  # a file:// mirror, if any
SUBNET = "10.77.0"  # hosts mode: private to the cluster's namespaces, so concurrent clusters never collide
HEAD_IP = f"{SUBNET}.1"
BRIDGE = "hangarbr0"
T = TypeVar("T")
HEALTH_CHECKS = {  # the head notices a dead node in ~2.6 s instead of ~17.5 s
    "RAY_health_check_period_ms": "1000",
    "RAY_health_check_timeout_ms": "1000",
    "RAY_health_check_failure_threshold": "3",
}


def unavailable_reason() -> str | None:
    """Why no cluster can be started here (None when it can)."""
    if importlib.util.find_spec("ray") is None:  # not imported here: Ray reads its auth settings at import
        return "Ray is not installed (pip install -e '.[cluster]'; make test-deps installs it)"
    if os.geteuid() != 0:
        return "a Ray cluster in its own network namespace needs root"
    if shutil.which("ip") is None:
        return "iproute2 (ip) is missing"
    return None


def _ip(*args: str) -> None:
    done = subprocess.run(["ip", *args], capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"ip {' '.join(args)}: {done.stderr.strip()}")


def within(netns: str, fn: Callable[[], T]) -> T:
    """``fn()`` run by a thread inside network namespace ``netns`` (and the subprocesses it starts: ``ip link``)."""
    result: list[T] = []
    errors: list[BaseException] = []

    def run() -> None:
        try:
            _setns(f"/run/netns/{netns}")
            result.append(fn())
        except BaseException as exc:  # re-raised in the caller
            errors.append(exc)

    thread = threading.Thread(target=run)
    thread.start()
    thread.join()
    if errors:
        raise errors[0]
    return result[0]


def _setns(path: str) -> None:
    libc = ctypes.CDLL(None, use_errno=True)
    fd = os.open(path, os.O_RDONLY)
    try:
        if libc.setns(fd, CLONE_NEWNET) != 0:
            err = ctypes.get_errno()
            raise OSError(err, f"setns({path}): {os.strerror(err)}")
    finally:
        os.close(fd)


@dataclass
class NodeProcess:
    """One ``hangar node`` started by the harness."""

    name: str
    data_dir: Path
    port: int
    process: subprocess.Popen[bytes]
    log_path: Path
    args: list[str]
    env: dict[str, str]
    host: str = "127.0.0.1"
    netns: str | None = None  # hosts mode: the node's own network namespace

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 30.0) -> int | None:
        return end_process(self.process, sig, timeout)

    def kill(self) -> None:
        """SIGKILL, as a crash would (its sandboxes stay behind until a node with this data dir starts)."""
        self.stop(signal.SIGKILL)


@dataclass
class RayCluster:
    root: Path
    netns: str
    port: int = field(default_factory=free_port)
    env: dict[str, str] = field(default_factory=dict)
    nodes: list[NodeProcess] = field(default_factory=list)
    hosts: bool = False
    node_netns: list[str] = field(default_factory=list)
    _host_ns: int | None = None
    _saved_env: dict[str, str | None] = field(default_factory=dict)

    @property
    def address(self) -> str:
        return f"{self.head_ip}:{self.port}"

    @property
    def head_ip(self) -> str:
        return HEAD_IP if self.hosts else "127.0.0.1"

    def gateway_url(self, server: object) -> str:
        """A gateway's URL as a node (another host in hosts mode) reaches it."""
        return f"http://{self.head_ip}:{server.port}"  # type: ignore[attr-defined]

    @classmethod
    def start(cls, hosts: bool = False) -> RayCluster:
        root = Path(tempfile.mkdtemp(prefix="hangar-ray-"))
        cluster = cls(root=root, netns=f"hangar-ray-{uuid.uuid4().hex[:8]}", hosts=hosts)
        TOKEN_PATH.write_text(TOKEN)
        TOKEN_PATH.chmod(0o600)
        cluster.env = {
            "RAY_AUTH_MODE": "token",
            "RAY_AUTH_TOKEN_PATH": str(TOKEN_PATH),
            "RAY_USAGE_STATS_ENABLED": "0",
            "RAY_ADDRESS": cluster.address,
        }
        # The namespace has no route out: builds (uv) need a package index they can reach from inside it.
        index = os.environ.get("UV_INDEX_URL") or (f"file://{LOCAL_INDEX}" if LOCAL_INDEX.is_dir() else None)
        if index:
            cluster.env["UV_INDEX_URL"] = index
        try:
            subprocess.run(["ip", "netns", "add", cluster.netns], check=True, capture_output=True)
            subprocess.run(["ip", "netns", "exec", cluster.netns, "ip", "link", "set", "lo", "up"], check=True)
            head_ip: list[str] = []
            if hosts:
                _ip("-n", cluster.netns, "link", "add", BRIDGE, "type", "bridge")
                _ip("-n", cluster.netns, "addr", "add", f"{HEAD_IP}/24", "dev", BRIDGE)
                _ip("-n", cluster.netns, "link", "set", BRIDGE, "up")
                head_ip = [f"--node-ip-address={HEAD_IP}"]
            cluster._host_ns = os.open("/proc/thread-self/ns/net", os.O_RDONLY)
            _setns(f"/run/netns/{cluster.netns}")
            cluster._saved_env = {key: os.environ.get(key) for key in cluster.env}
            os.environ.update(cluster.env)  # this process's Ray driver (ray.get_actor in tests) joins with them
            cluster._ray(
                "start",
                "--head",
                f"--port={cluster.port}",
                "--include-dashboard=false",
                "--include-log-monitor=false",
                "--num-cpus=2",
                "--object-store-memory=100000000",
                f"--temp-dir={root / 'rt'}",
                "--disable-usage-stats",
                *head_ip,
                extra_env=HEALTH_CHECKS,
            )
        except BaseException:
            cluster.stop()
            raise
        return cluster

    def _ray(self, *args: str, extra_env: dict[str, str] | None = None, netns: str | None = None) -> None:
        env = {**os.environ, **self.env, **(extra_env or {})}
        done = subprocess.run([*_enter(netns), str(BIN / "ray"), *args], env=env, capture_output=True, timeout=120)
        if done.returncode != 0:
            raise RuntimeError(f"ray {' '.join(args)} failed:\n{done.stdout.decode()}\n{done.stderr.decode()}")

    def start_node(
        self,
        data_dir: Path,
        *,
        database_url: str,
        gateway: str,
        name: str | None = None,
        slots: int | None = None,
        env: dict[str, str] | None = None,
        port: int | None = None,
        timeout: float = 90.0,
    ) -> NodeProcess:
        """Start ``hangar node`` and wait until its API answers its health check (hosts mode: on a host of its own,
        i.e. its own network namespace, veth and raylet)."""
        name = name or f"node-{uuid.uuid4().hex[:6]}"
        port = port or free_port()
        data_dir.mkdir(parents=True, exist_ok=True)
        host, netns = ("127.0.0.1", None) if not self.hosts else self._add_host()
        args = [
            *_enter(netns),
            str(BIN / "hangar"),
            "node",
            "--data-dir",
            str(data_dir),
            "--listen",
            f"{host}:{port}",
            "--database-url",
            database_url,
            "--gateway",
            gateway,
            "--name",
            name,
        ]
        if slots is not None:
            args += ["--slots", str(slots)]
        node_env = {**os.environ, **self.env, **(env or {})}
        log_path = data_dir / f"node-{port}.log"
        log = open(log_path, "ab")  # noqa: SIM115 - handed to the child process
        process = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT, env=node_env, start_new_session=True)
        node = NodeProcess(name, data_dir, port, process, log_path, args, env or {}, host, netns)
        self.nodes.append(node)
        self.wait_healthy(node, timeout)
        return node

    def _add_host(self) -> tuple[str, str]:
        """A namespace on the bridge with the next address, and a raylet in it joined to the head."""
        index = len(self.node_netns) + 1
        netns, ip, veth = f"{self.netns}-h{index}", f"{SUBNET}.{10 + index}", f"hv{index}"
        self.node_netns.append(netns)
        _ip("netns", "add", netns)
        _ip("-n", netns, "link", "set", "lo", "up")
        _ip("-n", self.netns, "link", "add", veth, "type", "veth", "peer", "name", "eth0", "netns", netns)
        _ip("-n", self.netns, "link", "set", veth, "master", BRIDGE, "up")
        _ip("-n", netns, "addr", "add", f"{ip}/24", "dev", "eth0")
        _ip("-n", netns, "link", "set", "eth0", "up")
        self._ray(
            "start",
            f"--address={self.address}",
            f"--node-ip-address={ip}",
            "--num-cpus=1",
            "--object-store-memory=80000000",
            "--include-log-monitor=false",
            "--disable-usage-stats",
            netns=netns,
        )
        return ip, netns

    def cut_off(self, node: NodeProcess) -> None:
        """Hosts mode: take the node's link down (its bridge port), as a host that drops off the network would."""
        assert node.netns is not None, "only a node on a host of its own has a link to cut"
        _ip("-n", self.netns, "link", "set", f"hv{node.netns.rsplit('-h', 1)[1]}", "down")

    def restart_node(self, node: NodeProcess, timeout: float = 90.0) -> NodeProcess:
        """The same node (name, data dir, port) started again after it stopped or was killed."""
        log = open(node.log_path, "ab")  # noqa: SIM115 - handed to the child process
        node_env = {**os.environ, **self.env, **node.env}
        node.process = subprocess.Popen(
            node.args, stdout=log, stderr=subprocess.STDOUT, env=node_env, start_new_session=True
        )
        self.wait_healthy(node, timeout)
        return node

    @staticmethod
    def wait_healthy(node: NodeProcess, timeout: float) -> None:
        health = f"{node.url}/node/v1/health"  # unauthenticated: 401 still says the API is up
        wait_serving(node.process, health, f"hangar node {node.name}", node.log, timeout, ok=(200, 401), interval=0.1)

    def _pids(self) -> dict[int, str]:
        """Every process in this cluster's namespaces (only ours: ``ray stop`` would stop every Ray on the host)."""
        pids: list[int] = []
        for netns in (self.netns, *self.node_netns):
            done = subprocess.run(["ip", "netns", "pids", netns], capture_output=True, text=True)
            pids += map(int, done.stdout.split())
        found: dict[int, str] = {}
        for pid in pids:
            if pid == os.getpid():  # this process's calling thread is in the namespace too
                continue
            try:
                found[pid] = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            except OSError:
                continue
        return found

    def _stop_ray(self) -> None:
        """Ray's own stop order: raylets, then the other daemons and workers, then the GCS (probes.md)."""
        pids = self._pids()
        raylets = [pid for pid, cmd in pids.items() if "raylet" in cmd.split(" ")[0]]
        gcs = [pid for pid, cmd in pids.items() if "gcs_server" in cmd.split(" ")[0]]
        others = [pid for pid in pids if pid not in raylets and pid not in gcs]
        for group in (raylets, others, gcs):
            for pid in group:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGTERM)
            deadline = time.monotonic() + 5
            while time.monotonic() < deadline and any(Path(f"/proc/{pid}").exists() for pid in group):
                time.sleep(0.05)
        for pid in self._pids():
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)

    def stop(self) -> None:
        """Nodes first (SIGTERM), then Ray in its own order, then the namespace; the thread goes home."""
        for node in self.nodes:
            node.stop()
        try:
            import ray

            if ray.is_initialized():
                ray.shutdown()
        except ImportError:
            pass
        self._stop_ray()
        if self._host_ns is not None:
            libc = ctypes.CDLL(None, use_errno=True)
            libc.setns(self._host_ns, CLONE_NEWNET)
            os.close(self._host_ns)
            self._host_ns = None
        for key, value in self._saved_env.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
        for netns in (*self.node_netns, self.netns):  # their veths and the bridge go with them
            subprocess.run(["ip", "netns", "del", netns], capture_output=True)
        shutil.rmtree(self.root, ignore_errors=True)


def _enter(netns: str | None) -> list[str]:
    """The command prefix that runs a program in ``netns`` (network namespace only), or nothing."""
    return [] if netns is None else ["nsenter", f"--net=/run/netns/{netns}", "--"]


@pytest.fixture(scope="module")
def ray_cluster() -> Iterator[RayCluster]:
    """One Ray head per test module, in its own loopback-only namespace (import into a test module to use)."""
    reason = unavailable_reason()
    if reason is not None:
        pytest.skip(reason)
    cluster = RayCluster.start()
    yield cluster
    cluster.stop()
