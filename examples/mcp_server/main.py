"""An MCP server (streamable HTTP on 0.0.0.0:8000 ``/mcp``) to deploy with ``serverProtocol: MCP``.

Stateless by default, as AgentCore recommends; ``MCP_STATEFUL=1`` keeps server-side sessions (the server issues
its own ``Mcp-Session-Id`` and Hangar keeps it on one session). ``MCP_JSON=1`` answers JSON instead of SSE.
Runs on the official ``mcp`` SDK, major 2 (``MCPServer``) or 1 (``FastMCP``), whichever requirements.txt installs.
"""

from __future__ import annotations

import asyncio
import os
from typing import Any

STATELESS = os.environ.get("MCP_STATEFUL") != "1"
JSON = os.environ.get("MCP_JSON") == "1"
PORT = int(os.environ.get("PORT", "8000"))

try:
    from mcp.server.mcpserver import Context, MCPServer  # mcp 2.x

    server: Any = MCPServer("hangar-example")

    def run() -> None:
        server.run(transport="streamable-http", host="0.0.0.0", port=PORT, stateless_http=STATELESS, json_response=JSON)

except ImportError:  # mcp 1.x
    from mcp.server.fastmcp import Context, FastMCP

    server = FastMCP("hangar-example", host="0.0.0.0", port=PORT, stateless_http=STATELESS, json_response=JSON)

    def run() -> None:
        server.run(transport="streamable-http")


NOTES: list[str] = []  # this process's memory: shows that one MCP session stays on one sandbox


@server.tool()
def add(a: int, b: int) -> int:
    """Add two integers."""
    return a + b


@server.tool()
async def count(to: int, ctx: Context, delay: float = 0.0) -> str:
    """Count to ``to``, reporting progress at every step (``delay`` seconds apart)."""
    for step in range(1, to + 1):
        await ctx.report_progress(step, to, f"step {step}")
        if delay:
            await asyncio.sleep(delay)
    return f"counted to {to}"


@server.tool()
def remember(note: str) -> list[str]:
    """Keep a note in this server's memory and return all notes so far."""
    NOTES.append(note)
    return list(NOTES)


@server.tool()
def whoami() -> dict[str, Any]:
    """The process serving this call (the sandbox of the Hangar session)."""
    return {"pid": os.getpid(), "stateless": STATELESS, "json": JSON}


if __name__ == "__main__":
    # As AgentCore documents it: the SDK's own run (anyio.run → uvicorn.Server.serve). Hangar's warm template stops
    # where this enters its event loop and forks every session from there.
    run()
