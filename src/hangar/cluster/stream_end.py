"""A stream from a node that dies (or is cut off) mid-answer ends so that the client can tell it from a finished one.

A killed node's connection breaks (RST/FIN): the read fails at once. A host cut off from the network sends nothing,
and an agent call has no read deadline (a stream may be quiet for minutes), so the read would wait forever; when the
gateway's watch takes the node for dead (``ClusterSessions._lost``) every stream still reading from it is aborted.

Either way the gateway then ends the client's answer the same way:

- an SSE answer (``text/event-stream``) first gets one last event in the shape the AgentCore SDK gives a stream that
  failed (``{"error", "error_type", "message"}``, here ``error_type`` ``RuntimeClientError``), after a blank line that
  closes any event the node had half sent;
- then the chunked body is aborted (no last chunk, connection closed): an HTTP/1.1 client such as httpx raises
  (``RemoteProtocolError: incomplete chunked read``). botocore does not: its ``StreamingBody.iter_lines()`` just
  ends, so a boto3 client sees the error event as the stream's last one (and otherwise an early end).

Each such end is logged (warning) and counted in ``hangar_cluster_streams_cut_total{node}``.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections import Counter
from collections.abc import AsyncGenerator, AsyncIterator
from dataclasses import dataclass, field
from typing import cast

from prometheus_client.core import CounterMetricFamily, Metric

from hangar.cluster.node_client import NodeUnreachable, RemoteResponse

log = logging.getLogger("hangar.cluster")

ERROR_MESSAGE = "The stream was cut: the session's node went away"


def error_event(reason: str) -> bytes:
    """The SSE event that ends a cut stream (shaped as the AgentCore SDK's own error event)."""
    document = {"error": reason, "error_type": "RuntimeClientError", "message": ERROR_MESSAGE}
    return b"\n\ndata: " + json.dumps(document).encode() + b"\n\n"


@dataclass(eq=False)
class _Reader:
    """One stream being relayed: the task reading it, and whether it waits on the node right now."""

    node: str
    task: asyncio.Task[object] | None
    reading: bool = False
    aborted: str | None = None  # why the gateway cut it


@dataclass(eq=False)  # registered as a metrics collector: hashed by identity
class Streams:
    """The node streams in flight on this gateway, per node, and how many were cut."""

    readers: dict[str, set[_Reader]] = field(default_factory=dict)
    cut: Counter[str] = field(default_factory=Counter)

    def guard(self, node: str, session_id: str, response: RemoteResponse) -> RemoteResponse:
        """``response`` whose body ends clearly if its node dies mid-stream (see the module docstring)."""
        return _Guarded(self, node, session_id, response)

    def abort(self, node: str, reason: str) -> None:
        """The node is dead: every stream still reading from it ends now (those between two reads, at the next)."""
        for reader in self.readers.pop(node, set()):
            reader.aborted = reason
            if reader.reading and reader.task is not None:
                reader.task.cancel()

    def describe(self) -> list[Metric]:
        return []

    def collect(self) -> list[Metric]:
        family = CounterMetricFamily(
            "hangar_cluster_streams_cut", "Answers cut short because their node died or was cut off.", labels=["node"]
        )
        for node, count in sorted(self.cut.items()):
            family.add_metric([node], count)
        return [family]


class _Guarded(RemoteResponse):
    def __init__(self, streams: Streams, node: str, session_id: str, inner: RemoteResponse) -> None:
        super().__init__(inner._response)
        self._streams = streams
        self._node = node
        self._session_id = session_id

    async def iter_raw(self) -> AsyncIterator[bytes]:
        reader = _Reader(self._node, asyncio.current_task())
        self._streams.readers.setdefault(self._node, set()).add(reader)
        source = cast(AsyncGenerator[bytes, None], super().iter_raw())
        try:
            while reader.aborted is None:
                reader.reading = True
                try:
                    chunk = await anext(source)
                except StopAsyncIteration:
                    return
                except asyncio.CancelledError:
                    if not _aborted(reader):
                        raise  # not ours: the client left, or the server stops
                    asyncio.current_task().uncancel()  # type: ignore[union-attr]
                    break
                except NodeUnreachable as exc:
                    reader.aborted = str(exc)
                    break
                finally:
                    reader.reading = False
                yield chunk
            reason = f"node {self._node}: {reader.aborted}"
            self._streams.cut[self._node] += 1
            log.warning("stream of session %s cut: %s", self._session_id, reason)
            if self.headers.get("content-type", "").startswith("text/event-stream"):
                yield error_event(reason)
            raise NodeUnreachable(reason)
        finally:
            self._streams.readers.get(self._node, set()).discard(reader)
            await source.aclose()


def _aborted(reader: _Reader) -> bool:
    """Whether the gateway cancelled this read itself (``Streams.abort``), rather than the client or the server."""
    return reader.aborted is not None
