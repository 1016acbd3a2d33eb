"""Send corpus scripts to a server and reduce the answers to comparable ``Outcome``s.

Only what may legitimately differ between two correct runs is normalised: timestamps, generated ids, task
durations and memory addresses.
"""

from __future__ import annotations

import re

import httpx
import websockets
from websockets.sync.client import connect

from tests.sdk.corpus import Case, Outcome, Req

CLIENT_TIMEOUT = 30.0

_NORMALISERS = (
    (re.compile(r'("time_of_last_update": ?)\d+'), r"\1<ts>"),
    (re.compile(r'("duration": ?)[-0-9.e]+'), r"\1<duration>"),
    (re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}"), "<uuid>"),
    (re.compile(r"0x[0-9a-f]+"), "0x<addr>"),
)


def normalise(text: str) -> str:
    for pattern, replacement in _NORMALISERS:
        text = pattern.sub(replacement, text)
    return text


def send(client: httpx.Client, base_url: str, req: Req) -> Outcome:
    headers = [
        (name.encode(), value if isinstance(value, bytes) else value.encode("latin-1")) for name, value in req.headers
    ]
    response = client.request(req.method, base_url + req.path, content=req.body, headers=headers)
    body = response.content.decode("utf-8", "backslashreplace")
    return Outcome(response.status_code, response.headers.get("content-type"), normalise(body))


def run_case(base_url: str, case: Case) -> tuple[Outcome, ...]:
    with httpx.Client(timeout=CLIENT_TIMEOUT) as client:
        return tuple(send(client, base_url, req) for req in case.steps)


def _expects_reply(message: str | bytes) -> bool:
    return not (isinstance(message, str) and (message.startswith("close:") or message == "raise"))


def run_ws_script(
    ws_url: str, messages: tuple[str | bytes, ...], headers: tuple[tuple[str, str | bytes], ...]
) -> list[str]:
    """Transcript of one WebSocket conversation: the replies, then how it ended (close code or rejection).

    A script whose last message expects a reply ends with the client closing the socket itself.
    """
    transcript: list[str] = []
    text_headers = [(name, value) for name, value in headers if isinstance(value, str)]
    try:
        with connect(ws_url, additional_headers=text_headers, open_timeout=10, close_timeout=10) as socket:
            try:
                for message in messages:
                    socket.send(message)
                    if _expects_reply(message):
                        transcript.append(f"recv {normalise(repr(socket.recv(timeout=CLIENT_TIMEOUT)))}")
                if messages and _expects_reply(messages[-1]):
                    socket.close(code=1000)
                    transcript.append(f"client closed, server answered {socket.close_code}")
                    return transcript
                socket.recv(timeout=CLIENT_TIMEOUT)
                transcript.append("unexpected message after the script")
            except websockets.ConnectionClosed as closed:
                transcript.append(f"closed {closed.rcvd.code if closed.rcvd else None}")
    except websockets.InvalidStatus as rejected:
        transcript.append(f"rejected {rejected.response.status_code}")
    return transcript
