"""A real local model server for the framework examples: llama-cpp-python's OpenAI-compatible server on the tiny
random GGUF of ``tiny_model.py``, in a network namespace of its own that stands in for the internet (as
``tests/sandbox/wan.py`` does): sessions reach it through their normal NAT egress, and nothing leaves the machine.
"""

from __future__ import annotations

import secrets
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx

from tests.protocols.tiny_model import write_tiny_llama

PORT = 8081


@dataclass(frozen=True)
class ModelServer:
    base_url: str  # OpenAI-compatible: …/v1
    model: str
    log_path: Path


def _ip(*argv: str) -> None:
    subprocess.run(["ip", *argv], check=True, capture_output=True, timeout=10)


@contextmanager
def local_model_server(work: Path) -> Iterator[ModelServer]:
    """Start the server in a fresh netns reached over a veth (198.18.0.0/15, the benchmarking range); stop it after."""
    model = write_tiny_llama(work / "tiny.gguf")
    suffix = secrets.token_hex(3)
    netns, host_if = f"hangar-test-llm-{suffix}", f"tl{suffix}"
    third = int(suffix[:2], 16)
    host_ip, server_ip = f"198.19.{third}.1", f"198.19.{third}.2"
    log_path = work / "model-server.log"
    process: subprocess.Popen[bytes] | None = None
    _ip("netns", "add", netns)
    try:
        _ip("link", "add", host_if, "type", "veth", "peer", "name", "eth0", "netns", netns)
        _ip("addr", "add", f"{host_ip}/30", "dev", host_if)
        _ip("link", "set", host_if, "up")
        _ip("-n", netns, "addr", "add", f"{server_ip}/30", "dev", "eth0")
        _ip("-n", netns, "link", "set", "eth0", "up")
        _ip("-n", netns, "link", "set", "lo", "up")
        argv = [sys.executable, "-m", "llama_cpp.server", "--model", str(model), "--model_alias", "tiny"]
        argv += ["--host", server_ip, "--port", str(PORT), "--n_ctx", "2048", "--n_threads", "1"]
        argv += ["--chat_format", "chatml-function-calling", "--verbose", "False"]
        with log_path.open("wb") as log:
            process = subprocess.Popen(["ip", "netns", "exec", netns, *argv], stdout=log, stderr=subprocess.STDOUT)
        base_url = f"http://{server_ip}:{PORT}/v1"
        deadline = time.monotonic() + 120
        while True:
            try:
                if httpx.get(f"{base_url}/models", timeout=5).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"the model server did not start: {log_path.read_text()[-2000:]}")
            time.sleep(0.3)
        yield ModelServer(base_url=base_url, model="tiny", log_path=log_path)
    finally:
        if process is not None:
            process.terminate()
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout=10)
        subprocess.run(["ip", "link", "del", host_if], capture_output=True, timeout=10, check=False)
        subprocess.run(["ip", "netns", "del", netns], capture_output=True, timeout=10, check=False)
