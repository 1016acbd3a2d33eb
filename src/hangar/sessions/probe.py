"""Talking to an agent's ``/ping``: start-up readiness and the HealthyBusy check of the lifecycle loop."""

from __future__ import annotations

import asyncio
import json
import time
from dataclasses import dataclass

import httpx

from hangar.domain.errors import RuntimeClientError
from hangar.sandbox.base import Sandbox

PING_TIMEOUT_S = 2.0
_FIRST_POLL_S = 0.005
_MAX_POLL_S = 0.1


@dataclass(frozen=True)
class PingResult:
    status: str | None  # "Healthy", "HealthyBusy", or None when the body is not the contract's JSON
    time_of_last_update: float | None


async def wait_ready(client: httpx.AsyncClient, sandbox: Sandbox, timeout_s: float) -> None:
    """Poll ``GET /ping`` until the agent answers at all (any HTTP status: MCP servers have no /ping)."""
    deadline = time.monotonic() + timeout_s
    delay = _FIRST_POLL_S
    while True:
        if not sandbox.alive():
            raise RuntimeClientError("The agent exited during start-up before answering /ping; check its logs")
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise RuntimeClientError(
                f"Runtime initialization time exceeded: the agent did not answer /ping within {timeout_s:g}s"
            )
        try:
            await client.get("/ping", timeout=min(PING_TIMEOUT_S, remaining))
            return
        except httpx.HTTPError:
            pass
        await asyncio.sleep(min(delay, max(0.0, deadline - time.monotonic())))
        delay = min(delay * 2, _MAX_POLL_S)


async def ping(client: httpx.AsyncClient) -> PingResult | None:
    """One ``GET /ping``; None when the agent does not answer."""
    try:
        response = await client.get("/ping", timeout=PING_TIMEOUT_S)
    except httpx.HTTPError:
        return None
    if response.status_code != 200:
        return PingResult(None, None)
    try:
        body = json.loads(response.content)
    except ValueError:
        return PingResult(None, None)
    if not isinstance(body, dict):
        return PingResult(None, None)
    status = body.get("status")
    stamp = body.get("time_of_last_update")
    return PingResult(
        status if isinstance(status, str) else None,
        float(stamp) if isinstance(stamp, int | float) and not isinstance(stamp, bool) else None,
    )
