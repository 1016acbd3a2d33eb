"""5. Payloads: 1, 10 and 100 MB round trips through Hangar — time, and the server's peak RSS growth."""

from __future__ import annotations

import hashlib
import time

import httpx

from bench.context import BenchContext
from bench.hangar_instance import new_session_id

SIZES_MB = (1, 10, 100)
MB = 1_000_000  # decimal, as AgentCore's payload limit (100,000,000 bytes) is


def _body(size: int):  # type: ignore[no-untyped-def]
    block = b"x" * MB
    for _ in range(size):
        yield block


def run(ctx: BenchContext) -> dict[str, object]:
    arn = ctx.arn("raw")
    url = ctx.hangar.invoke_url(arn)
    session = new_session_id()
    results: dict[str, object] = {}
    sizes = (1, 10) if ctx.smoke else SIZES_MB
    with httpx.Client(timeout=600) as client:
        warm = b"{}"  # the session's sandbox starts here, not inside the first measurement
        client.post(url, content=warm, headers=ctx.hangar.signed_headers(url, warm, session)).raise_for_status()
        for size in sizes:
            whole = b"x" * (size * MB)
            headers = ctx.hangar.signed_headers(url, whole, session, content_type="application/octet-stream")
            digest = hashlib.sha256(whole).hexdigest()
            del whole
            rss_before, _ = ctx.hangar.server_rss_kib()
            ctx.hangar.reset_peak_rss()
            started = time.perf_counter()
            echoed = hashlib.sha256()
            received = 0
            with client.stream("POST", url, content=_body(size), headers=headers) as response:
                for chunk in response.iter_raw():
                    echoed.update(chunk)
                    received += len(chunk)
            elapsed = time.perf_counter() - started
            _, peak = ctx.hangar.server_rss_kib()
            if response.status_code != 200 or echoed.hexdigest() != digest:
                raise RuntimeError(f"{size} MB round trip failed: status {response.status_code}, {received} bytes back")
            results[f"{size}MB"] = {
                "seconds": round(elapsed, 3),
                "peak_rss_growth_mib": round((peak - rss_before) / 1024, 1),
            }
    return results
