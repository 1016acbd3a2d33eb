"""Talking to an agent's ``/ping``: start-up readiness and the HealthyBusy check of the lifecycle loop."""

from __future__ import annotations

import asyncio
import json
import time
from dataclasses import dataclass

from hangar.domain.errors import RuntimeClientError
from hangar.sandbox.base import Sandbox
from hangar.sessions.agent_http import AgentHttp, AgentHttpError

PING_TIMEOUT_S = 2.0
MAX_PING_BODY = 64 * 1024
_FIRST_POLL_S = 0.005
_MAX_POLL_S = 0.1


@dataclass(frozen=True)
class PingResult:
    status: str | None  # "Healthy", "HealthyBusy", or None when the body is not the contract's JSON
    time_of_last_update: float | None


async def _get_ping(client: AgentHttp, timeout_s: float) -> tuple[int, bytes]:
    async def exchange() -> tuple[int, bytes]:
        response = await client.request("GET", "/ping", [])
        try:
            return response.status_code, await response.read(MAX_PING_BODY)
        finally:
            await response.aclose()

    return await asyncio.wait_for(exchange(), timeout_s)


async def wait_ready(client: AgentHttp, sandbox: Sandbox, timeout_s: float) -> None:
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
            await _get_ping(client, min(PING_TIMEOUT_S, remaining))
            return
        except (AgentHttpError, TimeoutError):
            pass
        await sandbox.until_listening(min(delay, max(0.0, deadline - time.monotonic())))  # early when told
        delay = min(delay * 2, _MAX_POLL_S)


async def ping(client: AgentHttp) -> PingResult | None:
    """One ``GET /ping``; None when the agent does not answer."""
    try:
        status, content = await _get_ping(client, PING_TIMEOUT_S)
    except (AgentHttpError, TimeoutError):
        return None
    if status != 200:
        return PingResult(None, None)
    try:
        body = json.loads(content)
    except ValueError:
        return PingResult(None, None)
    if not isinstance(body, dict):
        return PingResult(None, None)
    reported = body.get("status")
    stamp = body.get("time_of_last_update")
    return PingResult(
        reported if isinstance(reported, str) else None,
        float(stamp) if isinstance(stamp, int | float) and not isinstance(stamp, bool) else None,
    )
