"""A 100,000,000-byte payload goes to the agent and back without Hangar holding it in memory."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Any

from tests.dataplane.support import deploy, new_session_id
from tests.support.server import HangarServer

PAYLOAD_SIZE = 100_000_000
MIB = 1024 * 1024


def _status_kib(pid: int, field: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(f"{field}:"):
            return int(line.split()[1])
    raise AssertionError(f"no {field} in /proc/{pid}/status")


def test_100_mb_round_trip_keeps_hangar_memory_flat(server: HangarServer, data: Any, control: Any) -> None:
    assert server.process is not None
    pid = server.process.pid
    rawecho = deploy(control, "rawecho", description="large")
    session_id = new_session_id()
    warm = data.invoke_agent_runtime(
        agentRuntimeArn=rawecho["agentRuntimeArn"], runtimeSessionId=session_id, payload=b"{}"
    )
    assert warm["response"].read() == b"{}"
    payload = os.urandom(PAYLOAD_SIZE)
    sent_digest = hashlib.sha256(payload).hexdigest()
    rss_before = _status_kib(pid, "VmRSS")
    response = data.invoke_agent_runtime(
        agentRuntimeArn=rawecho["agentRuntimeArn"],
        runtimeSessionId=session_id,
        payload=payload,
        contentType="application/octet-stream",
    )
    del payload
    received = hashlib.sha256()
    size = 0
    for chunk in response["response"].iter_chunks(chunk_size=MIB):
        received.update(chunk)
        size += len(chunk)
    peak_after = _status_kib(pid, "VmHWM")
    assert size == PAYLOAD_SIZE and received.hexdigest() == sent_digest
    growth_mib = (peak_after - rss_before) / 1024
    print(f"hangar serve peak RSS growth during a 100 MB round trip: {growth_mib:.1f} MiB")
    assert growth_mib < 24, f"Hangar's peak RSS grew by {growth_mib:.1f} MiB for a 95 MiB payload"
