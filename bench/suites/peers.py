"""12. Peers measured in the same run: a new container of the same trivial agent, to its first invocation byte.

Issue 13 compares Hangar's new session with what a user would otherwise do on the same machine. The agent is
``bench/agents/echo_sdk`` built as an OCI image exactly as the image suite builds it (Debian's python3, the agent's
environment as site-packages, the code in ``/app``; buildah from a ``FROM scratch`` Dockerfile), into a private
container store (overlay driver) that podman then runs from. Each sample is one new container:

- **podman** (``podman run --rm`` with crun, or runc where crun cannot run, its default bridge network and the
  port published on loopback);
- **podman + runsc** (the same with ``--runtime runsc``: gVisor, ptrace platform, as Hangar's gvisor backend uses);

timed from spawning ``podman run`` until the first byte of the first ``/invocations`` answer (polling ``/ping``
every 2 ms once the port answers), which is what Hangar's new-session rows time from the client's side. The
container is killed (``podman rm -f``) before the next sample, outside the timing. Peers are interleaved per round.
A peer whose tool is missing or fails here is reported as ``not available: <reason>``, never as a number.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
import time
import uuid
from pathlib import Path

import httpx
from tests.support.agents.image_rootfs import python_rootfs

from bench.context import AGENTS, BenchContext
from bench.direct import agent_env
from bench.stats import summarize_ms
from bench.suites.image_session import DOCKERFILE

AGENT = "echo_sdk"
IMAGE = "localhost/hangar-bench-peer:1"
PAYLOAD = b'{"prompt": "hello"}'
START_TIMEOUT_S = 60.0
# DOCKER_CONTAINER=1 (as AgentCore's generated Dockerfiles set it) makes the SDK listen on 0.0.0.0, not loopback.
# Resource limits a container may have here: podman's defaults (nofile/nproc 1M) exceed the host's hard limits, and
# the OCI runtime cannot raise them without CAP_SYS_RESOURCE.
ULIMITS = ["--ulimit", "nofile=1024:4096", "--ulimit", "nproc=4096:4096"]
# peer name -> podman's global arguments to try in order (the first that runs a container is measured): crun, podman's
# default, refuses hosts with hybrid cgroups (v1 controllers and a v2 mount), where runc works. runsc as an OCI
# runtime takes the namespace podman made as its "host" network (Debian 12's runsc cannot take it over otherwise).
PEERS: dict[str, tuple[list[str], ...]] = {
    "podman": (["--runtime", "crun"], ["--runtime", "runc"]),
    "podman_runsc": (["--runtime", "runsc", "--runtime-flag", "network=host", "--runtime-flag", "ignore-cgroups"],),
}


class Unavailable(Exception):
    """A peer that cannot run here; its row says why instead of a number."""


def _store_env(scratch: Path) -> dict[str, str]:
    """A private container store (overlay: a new container does not copy the image) beside no one else's."""
    conf = scratch / "storage.conf"
    conf.write_text(f'[storage]\ndriver = "overlay"\nrunroot = "{scratch}/run"\ngraphroot = "{scratch}/graph"\n')
    return {**os.environ, "CONTAINERS_STORAGE_CONF": str(conf), "BUILDAH_ISOLATION": "chroot"}


def _run(argv: list[str], env: dict[str, str], timeout: float = 1800) -> str:
    done = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=timeout, check=False)
    if done.returncode != 0:
        said = (done.stderr or done.stdout).strip().splitlines()
        raise Unavailable(f"{' '.join(argv[:3])} failed: {said[-1] if said else f'exit {done.returncode}'}")
    return done.stdout


def build_image(scratch: Path, env: dict[str, str]) -> None:
    """The echo agent as an image in the private store, as the image suite ships it to Hangar."""
    for tool in ("podman", "buildah"):
        if shutil.which(tool) is None:
            raise Unavailable(f"{tool} is not installed (apt-get install podman buildah)")
    env_site = next((agent_env(AGENT, []) / "lib").glob("python3*/site-packages"))
    packages = [p for p in env_site.iterdir() if p.name != "_virtualenv.pth"]
    rootfs = python_rootfs(scratch / "context" / "rootfs", packages)
    shutil.copy(AGENTS / AGENT / "main.py", rootfs / "app" / "main.py")
    (rootfs / "app" / "main.py").chmod(0o644)
    (scratch / "context" / "Dockerfile").write_text(DOCKERFILE)
    _run(["buildah", "build", "-q", "-t", IMAGE, str(scratch / "context")], env)


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def first_byte(env: dict[str, str], extra: list[str], client: httpx.Client) -> float:
    """Seconds from spawning ``podman run --rm`` to the first byte of the first invocation's answer."""
    name, port = f"hangar-bench-peer-{uuid.uuid4().hex[:10]}", _free_port()
    publish = ["-p", f"127.0.0.1:{port}:8080"]
    argv = ["podman", *extra, "run", "--rm", *ULIMITS, "-e", "DOCKER_CONTAINER=1", "--name", name, *publish, IMAGE]
    started = time.perf_counter()
    process = subprocess.Popen(argv, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        base = f"http://127.0.0.1:{port}"
        while True:
            if process.poll() is not None:
                said = (process.stderr.read() if process.stderr else b"").decode(errors="replace").strip()
                raise Unavailable(f"podman run exited {process.returncode}: {said.splitlines()[-1] if said else ''}")
            if time.perf_counter() - started > START_TIMEOUT_S:
                raise Unavailable(f"the container did not answer /ping within {START_TIMEOUT_S:.0f} s")
            try:
                if client.get(f"{base}/ping").status_code == 200:
                    break
            except httpx.TransportError:
                pass
            time.sleep(0.002)
        with client.stream("POST", f"{base}/invocations", content=PAYLOAD) as response:
            chunks = response.iter_raw()
            first = next(chunks, b"")
            elapsed = time.perf_counter() - started
            rest = b"".join(chunks)
        if response.status_code != 200:
            raise RuntimeError(f"invoke failed: {response.status_code} {(first + rest)[:300]!r}")
        return elapsed
    finally:
        subprocess.run(["podman", *extra, "rm", "-f", "-t", "0", name], env=env, capture_output=True, check=False)
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def _unmount_under(root: Path) -> None:
    """Whatever the private container store left mounted under the scratch dir goes before its removal."""
    listed = subprocess.run(["findmnt", "-rn", "-o", "TARGET"], capture_output=True, text=True, check=False).stdout
    for target in sorted((t for t in listed.split() if t.startswith(f"{root}/")), reverse=True):
        subprocess.run(["umount", "-l", target], capture_output=True, check=False)


def measure(rounds: int) -> dict[str, object]:
    """Every peer's first bytes over ``rounds`` interleaved rounds, or why it is not available."""
    results: dict[str, object] = {}
    with tempfile.TemporaryDirectory(prefix="hangar-bench-peers-", dir="/tmp") as tmp:
        scratch = Path(tmp)
        env = _store_env(scratch)
        try:
            build_image(scratch, env)
        except Unavailable as exc:
            return {peer: {"available": False, "reason": str(exc)} for peer in PEERS}
        live: dict[str, list[str]] = {}
        with httpx.Client(timeout=30) as client:
            for peer, candidates in PEERS.items():
                reasons = []
                for extra in candidates:
                    runtime = extra[1]
                    if shutil.which(runtime) is None:
                        reasons.append(f"{runtime} is not installed")
                        continue
                    try:
                        first_byte(env, extra, client)  # the first container pays for one-time setup (network, caches)
                    except Unavailable as exc:
                        reasons.append(f"{runtime}: {exc}")
                        continue
                    live[peer] = extra
                    break
                else:
                    results[peer] = {"available": False, "reason": "; ".join(reasons)}
            samples: dict[str, list[float]] = {peer: [] for peer in live}
            for _ in range(rounds):
                for peer, extra in live.items():
                    samples[peer].append(first_byte(env, extra, client))
        for peer, values in samples.items():
            results[peer] = {"available": True, "runtime": live[peer][1], **summarize_ms(values)}
        _run(["podman", "rmi", "-f", IMAGE], env)
        _unmount_under(scratch)  # not `podman system reset`: that would also remove the host's podman networks
    return {name: results[name] for name in PEERS}


def run(ctx: BenchContext) -> dict[str, object]:
    return measure(ctx.n(20, 2))


if __name__ == "__main__":
    import json
    import sys

    print(json.dumps(measure(int(sys.argv[1]) if len(sys.argv) > 1 else 5), indent=2))
