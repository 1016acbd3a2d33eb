"""Test agent that answers /ping like HTTP but /invocations with bytes that are not HTTP at all."""

from __future__ import annotations

import asyncio
import os

PING = b'HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 20\r\n\r\n{"status":"Healthy"}'


async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        request = await reader.readuntil(b"\r\n\r\n")
        writer.write(PING if request.startswith(b"GET /ping") else b"\x00\xffthis is not http\r\n\r\n")
        await writer.drain()
    except (asyncio.IncompleteReadError, ConnectionError, asyncio.LimitOverrunError):
        pass
    finally:
        writer.close()


async def main() -> None:
    server = await asyncio.start_server(serve, "0.0.0.0", int(os.environ.get("PORT", "8080")))
    async with server:
        await server.serve_forever()


if __name__ == "__main__":
    asyncio.run(main())
