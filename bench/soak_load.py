"""The soak's mixed load: one paced thread per kind of traffic, each bounded in count and in time, loopback only.

Kinds (every request signed as a real client signs it):

- ``warm``: echo invokes round-robin over a few long-lived sessions;
- ``stream``: a 50-event SSE stream on a long-lived session (every event counted);
- ``churn``: a new session id (its sandbox forked from the template), one invoke, StopRuntimeSession;
- ``command``: InvokeAgentRuntimeCommand (boto3) in a long-lived session, exit code checked;
- ``websocket``: a short conversation on ``/ws`` of its own long-lived session, closed with code 1000;
- ``bad``: a wrong signature, an unknown runtime, a too-short session id: each must be the expected 4xx, AWS-shaped.

An operation that fails (exception, unexpected status, wrong answer) counts as an error; nothing stops the soak.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from urllib.parse import quote

import httpx
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from websockets.exceptions import ConnectionClosedOK
from websockets.sync.client import connect

from bench.hangar_instance import REGION, HangarInstance, new_session_id

PAYLOAD = b'{"prompt": "soak"}'
STREAM_EVENTS = 50
WS_MESSAGES = 5
LONG_LIVED = 3
# kind -> (seconds between the starts of two operations of one thread, most operations of that thread in a run)
PACE: dict[str, tuple[float, int]] = {
    "warm": (0.1, 40_000),
    "stream": (0.5, 8_000),
    "churn": (0.5, 8_000),
    "command": (1.0, 4_000),
    "websocket": (1.0, 4_000),
    "bad": (0.5, 8_000),
}
MAX_ERRORS_KEPT = 10


@dataclass
class Tally:
    """Operations and errors by kind, and the first few error texts (shared by every load thread)."""

    ok: dict[str, int] = field(default_factory=lambda: dict.fromkeys(PACE, 0))
    errors: dict[str, int] = field(default_factory=lambda: dict.fromkeys(PACE, 0))
    first_errors: list[str] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def record(self, kind: str, error: Exception | None) -> None:
        with self._lock:
            if error is None:
                self.ok[kind] += 1
                return
            self.errors[kind] += 1
            if len(self.first_errors) < MAX_ERRORS_KEPT:
                self.first_errors.append(f"{kind}: {type(error).__name__}: {str(error)[:200]}")

    def summary(self) -> dict[str, object]:
        with self._lock:
            kinds = {kind: {"ok": self.ok[kind], "errors": self.errors[kind]} for kind in PACE}
            return {"operations": kinds, "errors": sum(self.errors.values()), "first_errors": list(self.first_errors)}


class Load:
    """Runs every kind of traffic against ``arn`` until ``stop()`` or each thread's count or time bound."""

    def __init__(self, hangar: HangarInstance, arn: str, seconds: float) -> None:
        self.hangar = hangar
        self.arn = arn
        self.deadline = time.monotonic() + seconds
        self.tally = Tally()
        self.sessions = [new_session_id() for _ in range(LONG_LIVED)]
        self.ws_session = new_session_id()
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []

    def start(self) -> None:
        ops: dict[str, Callable[[httpx.Client, int], None]] = {
            "warm": self._warm,
            "stream": self._stream,
            "churn": self._churn,
            "command": self._command(),
            "websocket": self._websocket,
            "bad": self._bad,
        }
        for kind, op in ops.items():
            thread = threading.Thread(target=self._loop, args=(kind, op), name=f"soak-{kind}", daemon=True)
            thread.start()
            self._threads.append(thread)

    def stop(self) -> None:
        """Stop every thread (each finishes its current operation) and the long-lived sessions."""
        self._stop.set()
        for thread in self._threads:
            thread.join(120)
        with httpx.Client(timeout=60) as client:
            for session in [*self.sessions, self.ws_session]:
                try:
                    self.hangar.stop_session(client, self.arn, session)
                except Exception as exc:  # a session that never started has nothing to stop
                    if "ResourceNotFound" not in str(exc):
                        self.tally.record("warm", exc)

    def _loop(self, kind: str, op: Callable[[httpx.Client, int], None]) -> None:
        pace, most = PACE[kind]
        with httpx.Client(timeout=60) as client:
            for index in range(most):
                if self._stop.is_set() or time.monotonic() >= self.deadline:
                    return
                began = time.monotonic()
                try:
                    op(client, index)
                    self.tally.record(kind, None)
                except Exception as exc:
                    self.tally.record(kind, exc)
                self._stop.wait(max(0.0, pace - (time.monotonic() - began)))

    def _post(self, client: httpx.Client, session: str, body: bytes) -> httpx.Response:
        url = self.hangar.invoke_url(self.arn)
        return client.post(url, content=body, headers=self.hangar.signed_headers(url, body, session))

    def _warm(self, client: httpx.Client, index: int) -> None:
        response = self._post(client, self.sessions[index % LONG_LIVED], PAYLOAD)
        if response.status_code != 200 or response.json() != json.loads(PAYLOAD):
            raise RuntimeError(f"warm invoke: {response.status_code} {response.text[:200]}")

    def _stream(self, client: httpx.Client, index: int) -> None:
        url = self.hangar.invoke_url(self.arn)
        body = json.dumps({"stream": STREAM_EVENTS}).encode()
        headers = self.hangar.signed_headers(url, body, self.sessions[index % LONG_LIVED])
        with client.stream("POST", url, content=body, headers=headers) as response:
            events = sum(1 for line in response.iter_lines() if line.startswith("data:"))
        if response.status_code != 200 or events != STREAM_EVENTS:
            raise RuntimeError(f"stream: {response.status_code}, {events} of {STREAM_EVENTS} events")

    def _churn(self, client: httpx.Client, _index: int) -> None:
        session = new_session_id()
        response = self._post(client, session, PAYLOAD)
        if response.status_code != 200:
            raise RuntimeError(f"new session: {response.status_code} {response.text[:200]}")
        self.hangar.stop_session(client, self.arn, session)

    def _command(self) -> Callable[[httpx.Client, int], None]:
        data = self.hangar._new_client("bedrock-agentcore")  # this thread's own client

        def command(_client: httpx.Client, index: int) -> None:
            response = data.invoke_agent_runtime_command(
                agentRuntimeArn=self.arn,
                runtimeSessionId=self.sessions[index % LONG_LIVED],
                body={"command": f"echo soak {index}", "timeout": 30},
            )
            chunks = [event["chunk"] for event in response["stream"]]
            stdout = "".join(c["contentDelta"].get("stdout", "") for c in chunks if "contentDelta" in c)
            if stdout != f"soak {index}\n" or chunks[-1] != {"contentStop": {"exitCode": 0, "status": "COMPLETED"}}:
                raise RuntimeError(f"command: {stdout!r} {chunks[-1]}")

        return command

    def _websocket(self, _client: httpx.Client, index: int) -> None:
        url = f"ws://127.0.0.1:{self.hangar.port}/runtimes/{quote(self.arn, safe='')}/ws"
        request = AWSRequest(
            method="GET",
            url=url.replace("ws://", "http://"),
            headers={"X-Amzn-Bedrock-AgentCore-Runtime-Session-Id": self.ws_session},
        )
        SigV4Auth(self.hangar.credentials, "bedrock-agentcore", REGION).add_auth(request)
        headers = {k: v for k, v in request.headers.items() if k.lower() != "host"}
        with connect(url, additional_headers=headers, open_timeout=30, close_timeout=10) as ws:
            for n in range(WS_MESSAGES):
                ws.send(f"{index}-{n}")
                answer = ws.recv(timeout=30)
                if answer != f"{index}-{n}":
                    raise RuntimeError(f"websocket answered {answer!r}")
            ws.send("close")
            try:
                ws.recv(timeout=30)
            except ConnectionClosedOK:
                return
            raise RuntimeError("websocket: no close after 'close'")

    def _bad(self, client: httpx.Client, index: int) -> None:
        """Requests a client gets wrong; each must be refused with its 4xx, AWS-shaped (``x-amzn-ErrorType``)."""
        url = self.hangar.invoke_url(self.arn)
        case = index % 3
        if case == 0:  # signed, then the body changed: the signature no longer matches
            headers = self.hangar.signed_headers(url, PAYLOAD, self.sessions[0])
            response, expected = client.post(url, content=b'{"prompt": "tampered"}', headers=headers), 403
        elif case == 1:
            unknown = self.arn.rsplit("/", 1)[0] + "/bench_missing-0000000000"
            response, expected = self._post_to(client, self.hangar.invoke_url(unknown), new_session_id()), 404
        else:
            response, expected = self._post_to(client, url, "short"), 400  # session ids are 33+ characters
        if response.status_code != expected or "x-amzn-errortype" not in response.headers:
            raise RuntimeError(f"bad request {case}: {response.status_code} (wanted {expected}) {response.text[:200]}")

    def _post_to(self, client: httpx.Client, url: str, session: str) -> httpx.Response:
        return client.post(url, content=PAYLOAD, headers=self.hangar.signed_headers(url, PAYLOAD, session))
