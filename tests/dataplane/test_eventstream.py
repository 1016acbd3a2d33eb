"""The event-stream encoder, checked with botocore's own decoder and response parser."""

from __future__ import annotations

import io

import botocore.parsers
import botocore.session
import pytest
from botocore.eventstream import EventStream, EventStreamBuffer
from botocore.exceptions import EventStreamError

from hangar.gateway import eventstream


def _parsed_events(data: bytes) -> EventStream:
    """Parse ``data`` exactly as boto3 parses an InvokeAgentRuntimeCommand response stream."""
    model = botocore.session.get_session().get_service_model("bedrock-agentcore")
    output = model.operation_model("InvokeAgentRuntimeCommand").output_shape.members["stream"]
    parser = botocore.parsers.EventStreamJSONParser()

    class Raw:
        def __init__(self, payload: bytes) -> None:
            self.stream_ = io.BytesIO(payload)

        def stream(self):  # type: ignore[no-untyped-def]
            yield from iter(lambda: self.stream_.read(7), b"")  # odd chunk size: frames span chunks

        def close(self) -> None:
            pass

    return EventStream(Raw(data), output, parser, "InvokeAgentRuntimeCommand")


def test_frames_decode_with_botocore_and_crcs_hold() -> None:
    frames = (
        eventstream.event({"contentStart": {}})
        + eventstream.event({"contentDelta": {"stdout": "héllo\n"}})
        + eventstream.event({"contentDelta": {"stderr": "warn"}})
        + eventstream.event({"contentStop": {"exitCode": 3, "status": "TIMED_OUT"}})
    )
    buffer = EventStreamBuffer()
    buffer.add_data(frames)
    messages = list(buffer)
    assert [m.headers[":event-type"] for m in messages] == ["chunk"] * 4
    assert all(m.headers[":message-type"] == "event" for m in messages)
    events = list(_parsed_events(frames))
    assert events == [
        {"chunk": {"contentStart": {}}},
        {"chunk": {"contentDelta": {"stdout": "héllo\n"}}},
        {"chunk": {"contentDelta": {"stderr": "warn"}}},
        {"chunk": {"contentStop": {"exitCode": 3, "status": "TIMED_OUT"}}},
    ]


def test_corrupted_frame_is_rejected_by_botocore() -> None:
    frame = bytearray(eventstream.event({"contentStart": {}}))
    frame[-5] ^= 0xFF  # flip a payload byte: the message CRC no longer holds
    buffer = EventStreamBuffer()
    buffer.add_data(bytes(frame))
    with pytest.raises(Exception, match=r"(?i)crc|checksum"):
        list(buffer)


def test_exception_frame_raises_event_stream_error_with_its_code() -> None:
    data = eventstream.event({"contentStart": {}}) + eventstream.exception("runtimeClientError", "sandbox gone")
    stream = iter(_parsed_events(data))
    assert next(stream) == {"chunk": {"contentStart": {}}}
    with pytest.raises(EventStreamError) as raised:
        next(stream)
    assert raised.value.response["Error"] == {"Code": "runtimeClientError", "Message": "sandbox gone"}
