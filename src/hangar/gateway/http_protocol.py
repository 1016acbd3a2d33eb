"""The gateway's HTTP/1.1 server protocol: uvicorn's httptools protocol, with an answer's head and body in one send.

uvicorn writes a response's status line and headers as soon as the app sends ``http.response.start``, and the body
in a second write. Every write to the client's socket is a system call and a wake-up of the client, which then
reads a head it cannot use without the body; on the warm invoke path that second wake-up is about as costly as
the gateway's own work on the answer. So the head is held back until the next write (the body, or the end of a
body-less answer, which uvicorn always writes) and leaves with it as one send. A head whose body does not follow
within the same event-loop step (a stream that has not produced its first chunk yet) is sent on its own on the
loop's next pass: a held head never waits for the agent.

Only the HTTP cycle is affected: an upgrade to WebSocket hands the real transport to the WebSocket protocol.
"""

from __future__ import annotations

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

# One definition for the gateway and forked agents: warmup.py runs inside sandboxes, where it cannot import Hangar.
from hangar.sandbox.warmup import one_send_protocol

# ``hangar serve`` passes it to uvicorn as ``http=``.
GatewayHttpProtocol: type[HttpToolsProtocol] = one_send_protocol(HttpToolsProtocol)
