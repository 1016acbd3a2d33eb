"""Test agent whose /ping always says HealthyBusy, with ``time_of_last_update`` only when STAMP=1."""

from __future__ import annotations

import asyncio
import json
import os
import time

STARTED = int(time.time())


def _answer(body: dict[str, object]) -> bytes:
    data = json.dumps(body).encode()
    head = f"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {len(data)}\r\n\r\n"
    return head.encode() + data


async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while True:
            head = await reader.readuntil(b"\r\n\r\n")
            length = 0
            for line in head.split(b"\r\n"):
                if line.lower().startswith(b"content-length:"):
                    length = int(line.split(b":")[1])
            await reader.readexactly(length)
            if head.startswith(b"GET /ping"):
                ping: dict[str, object] = {"status": "HealthyBusy"}
                if os.environ.get("STAMP") == "1":
                    ping["time_of_last_update"] = STARTED
                writer.write(_answer(ping))
            else:
                writer.write(_answer({"ok": True}))
            await writer.drain()
    except (asyncio.IncompleteReadError, ConnectionError, asyncio.LimitOverrunError, ValueError):
        pass
    finally:
        writer.close()


async def main() -> None:
    server = await asyncio.start_server(serve, "0.0.0.0", int(os.environ.get("PORT", "8080")))
    async with server:
        await server.serve_forever()


if __name__ == "__main__":
    asyncio.run(main())
