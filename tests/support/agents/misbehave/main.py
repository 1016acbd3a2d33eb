"""Test agent that misbehaves on purpose (tests/faults), one way per request, chosen by the
``X-Amzn-Bedrock-AgentCore-Runtime-Custom-Fault`` header:

- ``noread``: reads the request line and headers, then never reads the body and never answers;
- ``drip``: answers 200 at once, then streams its body one byte a second (``DRIP_BYTES`` bytes);
- ``flood``: starts writing to stdout and stderr as fast as it can, forever, and answers 200;
- anything else: answers ``{"ok": true}`` (proves the agent still serves after a fault).

Plain asyncio, no dependencies: the faults are in the bytes, so no framework may smooth them over.
"""

from __future__ import annotations

import asyncio
import os
import sys
import threading

FAULT_HEADER = b"x-amzn-bedrock-agentcore-runtime-custom-fault"
DRIP_BYTES = 5
PING = b'HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 20\r\n\r\n{"status":"Healthy"}'
OK = b'HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 12\r\n\r\n{"ok": true}'
_flooding = threading.Event()


def _flood() -> None:
    """Print without end; a write that blocks (a full pipe) just waits, as a real chatty agent would."""
    line = ("flood " * 40 + "\n").encode()
    while True:
        sys.stdout.buffer.write(line)
        sys.stderr.buffer.write(line)


def _fault(head: bytes) -> bytes:
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == FAULT_HEADER:
            return value.strip()
    return b""


async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while True:
            head = await reader.readuntil(b"\r\n\r\n")
            if head.startswith(b"GET /ping"):
                writer.write(PING)
                await writer.drain()
                continue
            fault = _fault(head)
            if fault == b"noread":
                await asyncio.Event().wait()  # holds the connection, reads nothing, answers nothing
            if fault == b"drip":
                writer.write(b"HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\ncontent-length: %d\r\n\r\n" % DRIP_BYTES)
                await writer.drain()
                for _ in range(DRIP_BYTES):
                    await asyncio.sleep(1)
                    writer.write(b".")
                    await writer.drain()
                return
            if fault == b"flood" and not _flooding.is_set():
                _flooding.set()
                threading.Thread(target=_flood, daemon=True).start()
            length = 0
            for line in head.split(b"\r\n")[1:]:
                name, _, value = line.partition(b":")
                if name.strip().lower() == b"content-length":
                    length = int(value.strip())
            await reader.readexactly(length)
            writer.write(OK)
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
