"""The container credentials port while a warm template imports its agent: expired credentials for everyone.

An in-sandbox program (standard library only, loaded by path by ``zygote.py``). botocore fetches credentials as
soon as the agent creates a client, and the template has no session to fetch real ones for: this answers every
request with credentials that expired long ago and ``Connection: close``, so each fork's botocore refreshes on first
use from its own supervisor (that session's own credentials). It is separate from the zygote because it is the one
part of it that serves a socket and runs a thread, both gone before the template is checked and declared ready.
"""

from __future__ import annotations

import contextlib
import json
import os
import select
import socket
import threading
import time

EXPIRED_CREDENTIALS = json.dumps(
    {
        "AccessKeyId": "ASIAHANGARTEMPLATE00",
        "SecretAccessKey": "template-credentials-expired-refresh-in-the-session",
        "Token": "template",
        "Expiration": "2000-01-01T00:00:00Z",
    }
).encode()
THREAD_GONE_TRIES = 1000  # 1 ms apart: a joined thread's kernel task is gone in microseconds


class TemplateCredentials:
    """The credentials port while the template imports: every request gets the expired template credentials."""

    def __init__(self, port: int) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", port))
        self.sock.listen(16)
        self.wake_read, self.wake_write = os.pipe()  # close() wakes the thread at once instead of a poll interval
        self.thread = threading.Thread(target=self.serve, name="hangar-template-credentials", daemon=True)
        self.thread.start()

    def serve(self) -> None:
        while True:
            ready, _, _ = select.select([self.sock, self.wake_read], [], [])
            if self.wake_read in ready:
                return
            with contextlib.suppress(OSError):
                conn, _ = self.sock.accept()
                with conn:
                    conn.settimeout(5)
                    request = b""
                    while b"\r\n\r\n" not in request and len(request) < 65536:
                        chunk = conn.recv(4096)
                        if not chunk:
                            break
                        request += chunk
                    head = (
                        "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
                        f"Content-Length: {len(EXPIRED_CREDENTIALS)}\r\nConnection: close\r\n\r\n"
                    )
                    conn.sendall(head.encode() + EXPIRED_CREDENTIALS)

    def close(self) -> None:
        """Stop, close the listener and wait until the kernel has no task of the thread left (the fork checks the
        process's thread count, and a joined thread's task outlives ``join`` briefly)."""
        task = f"/proc/self/task/{self.thread.native_id}"
        os.write(self.wake_write, b"x")
        self.thread.join()
        self.sock.close()
        os.close(self.wake_read)
        os.close(self.wake_write)
        for _ in range(THREAD_GONE_TRIES):
            if not os.path.exists(task):
                return
            time.sleep(0.001)
