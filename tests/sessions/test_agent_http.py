"""The agent HTTP client against a scripted Unix-socket server: framing, keep-alive, broken and garbage answers."""

from __future__ import annotations

import asyncio
import shutil
import tempfile
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest

from hangar.sessions.agent_http import IDLE_CLOSE_S, AgentHttp, AgentHttpError

Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


def serve(handler: Handler, scenario: Callable[[AgentHttp, list[int]], Awaitable[None]]) -> list[int]:
    """Run ``scenario`` against a Unix server whose connections go to ``handler``; returns connection ids seen."""
    directory = Path(tempfile.mkdtemp(prefix="ah-"))
    connections: list[int] = []

    async def main() -> None:
        async def on_connect(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            connections.append(len(connections))
            try:
                await handler(reader, writer)
            finally:
                writer.close()

        server = await asyncio.start_unix_server(on_connect, str(directory / "s.sock"))
        client = AgentHttp(str(directory / "s.sock"))
        try:
            await scenario(client, connections)
        finally:
            await client.aclose()
            server.close()
            await server.wait_closed()

    try:
        asyncio.run(asyncio.wait_for(main(), 30))
    finally:
        shutil.rmtree(directory, ignore_errors=True)
    return connections


async def read_request(reader: asyncio.StreamReader) -> tuple[bytes, bytes]:
    head = await reader.readuntil(b"\r\n\r\n")
    length = 0
    for line in head.split(b"\r\n"):
        if line.lower().startswith(b"content-length:"):
            length = int(line.split(b":")[1])
    return head, await reader.readexactly(length)


async def body_of(client: AgentHttp, body: bytes = b"{}") -> tuple[int, bytes, dict[str, str]]:
    response = await client.request("POST", "/invocations", [("content-type", "application/json")], body)
    try:
        data = b"".join([piece async for piece in response.iter_raw()])
    finally:
        await response.aclose()
    return response.status_code, data, response.headers


def test_keep_alive_reuses_one_connection_and_decodes_chunked_bodies() -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while True:
            try:
                _, body = await read_request(reader)
            except asyncio.IncompleteReadError:
                return
            writer.write(b"HTTP/1.1 100 Continue\r\n\r\n")
            writer.write(b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\nx-a: 1\r\nx-a: 2\r\n\r\n")
            writer.write(
                b"3;ext=1\r\nabc\r\n" + f"{len(body):x}\r\n".encode() + body + b"\r\n0\r\nx-trailer: t\r\n\r\n"
            )
            await writer.drain()

    async def scenario(client: AgentHttp, connections: list[int]) -> None:
        for payload in (b"first", b"second"):
            status, data, headers = await body_of(client, payload)
            assert (status, data, headers["x-a"]) == (200, b"abc" + payload, "1, 2")
        assert len(connections) == 1

    serve(handler, scenario)


def test_a_closed_pooled_connection_is_retried_once_on_a_fresh_one() -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok")
        await writer.drain()
        # then close, as an agent's keep-alive timeout would

    async def scenario(client: AgentHttp, connections: list[int]) -> None:
        assert (await body_of(client))[1] == b"ok"
        assert (await body_of(client))[1] == b"ok"
        assert len(connections) == 2

    serve(handler, scenario)


def test_a_connection_left_idle_is_closed_by_the_client_and_one_in_use_is_kept() -> None:
    """The agent sees its idle connection end (so a forked uvicorn stops ticking), and the next call reconnects."""
    ended = asyncio.Event()

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while True:
            try:
                await read_request(reader)
            except asyncio.IncompleteReadError:
                ended.set()  # the client closed it: the agent's keep-alive timeout never had to
                return
            writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok")
            await writer.drain()

    async def scenario(client: AgentHttp, connections: list[int]) -> None:
        for _ in range(3):  # back to back: one connection
            assert (await body_of(client))[1] == b"ok"
        assert len(connections) == 1 and not ended.is_set()
        await asyncio.wait_for(ended.wait(), IDLE_CLOSE_S * 20)
        assert (await body_of(client))[1] == b"ok"
        assert len(connections) == 2

    serve(handler, scenario)


@pytest.mark.parametrize(
    "answer",
    [
        b"\x00\xffnot http at all\r\n\r\n",
        b"HTTP/1.1 20 OK\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nno colon here\r\n\r\n",
        b"HTTP/1.1 200 OK\r\ncontent-length: 10\r\n\r\nshort",
        b"HTTP/1.1 200 OK\r\ncontent-length: -1\r\n\r\n",
        b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\nzz\r\nabc\r\n0\r\n\r\n",
        b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n5\r\nabc",
        b"HTTP/1.1 200 OK\r\nx: " + b"a" * 70000 + b"\r\n\r\n",
        b"HTTP/1.1 200 OK\r\n",
    ],
)
def test_garbage_answers_are_agent_http_errors(answer: bytes) -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(answer)
        await writer.drain()

    async def scenario(client: AgentHttp, _connections: list[int]) -> None:
        with pytest.raises(AgentHttpError):
            await body_of(client)

    serve(handler, scenario)


def test_body_framed_by_close_and_http_1_0_are_not_reused() -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(b"HTTP/1.0 200 OK\r\ncontent-type: text/plain\r\n\r\nuntil the end")
        await writer.drain()

    async def scenario(client: AgentHttp, connections: list[int]) -> None:
        assert (await body_of(client))[1] == b"until the end"
        assert (await body_of(client))[1] == b"until the end"
        assert len(connections) == 2

    serve(handler, scenario)


def test_streamed_request_body_gets_its_declared_length() -> None:
    received: list[bytes] = []

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        _head, body = await read_request(reader)
        received.append(body)
        writer.write(b"HTTP/1.1 204 No Content\r\n\r\n")
        await writer.drain()

    async def pieces():  # type: ignore[no-untyped-def]
        for piece in (b"ab", b"cd", b"e"):
            yield piece

    async def scenario(client: AgentHttp, _connections: list[int]) -> None:
        response = await client.request("POST", "/x", [("content-length", "5")], pieces())
        assert response.status_code == 204 and await response.read(10) == b""
        await response.aclose()

    serve(handler, scenario)
    assert received == [b"abcde"]


def test_unreachable_socket_is_an_agent_http_error() -> None:
    async def main() -> None:
        client = AgentHttp("/nonexistent/agent.sock")
        with pytest.raises(AgentHttpError, match="cannot connect"):
            await client.request("GET", "/ping", [])

    asyncio.run(main())


def test_chunks_already_received_come_out_together_and_bytes_after_the_end_drop_the_connection() -> None:
    events = b"".join(f"{len(e):x}\r\n".encode() + e + b"\r\n" for e in (f"data: {i}\n\n".encode() for i in range(200)))

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while True:
            try:
                await read_request(reader)
            except asyncio.IncompleteReadError:
                return
            writer.write(b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n" + events + b"0\r\n\r\nSTRAY")
            await writer.drain()

    async def scenario(client: AgentHttp, connections: list[int]) -> None:
        for _ in range(2):
            response = await client.request("POST", "/invocations", [], b"{}")
            pieces = [piece async for piece in response.iter_raw()]
            await response.aclose()
            assert b"".join(pieces) == b"".join(f"data: {i}\n\n".encode() for i in range(200))
            assert len(pieces) < 200  # one write per read, not one per event
        assert len(connections) == 2  # "STRAY" after the last chunk: that connection was not reused

    serve(handler, scenario)


def test_an_answer_that_came_whole_is_handed_over_at_once_and_one_still_arriving_is_streamed() -> None:
    rest_may_come = asyncio.Event()
    answers = [
        [b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\nhello"],  # one write: the body comes with its headers
        [b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\nhe", b"llo"],  # the rest only once the client has looked
        [b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nokSTRAY"],  # bytes after the body: not reused
        [b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok"],
    ]

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while answers:
            try:
                await read_request(reader)
            except asyncio.IncompleteReadError:
                return
            first, *rest = answers.pop(0)
            writer.write(first)
            await writer.drain()
            for piece in rest:
                await rest_may_come.wait()
                writer.write(piece)
                await writer.drain()

    async def scenario(client: AgentHttp, connections: list[int]) -> None:
        response = await client.request("POST", "/invocations", [], b"{}")
        assert response.complete_body() == b"hello"
        assert [piece async for piece in response.iter_raw()] == []  # consumed: nothing is read twice
        await response.aclose()

        response = await client.request("POST", "/invocations", [], b"{}")
        assert response.complete_body() is None
        rest_may_come.set()
        assert b"".join([piece async for piece in response.iter_raw()]) == b"hello"
        await response.aclose()
        assert len(connections) == 1  # both answers complete: one kept-alive connection

        response = await client.request("POST", "/invocations", [], b"{}")
        assert response.complete_body() == b"ok"
        await response.aclose()
        assert (await body_of(client))[1] == b"ok"
        assert len(connections) == 2

    serve(handler, scenario)


def test_a_small_body_right_behind_its_head_is_awaited_and_a_late_or_large_one_is_streamed() -> None:
    """``complete_body_soon``: the head and the body of a small answer are two writes of the agent's server."""
    late, large = asyncio.Event(), asyncio.Event()
    big = b"x" * 70_000
    answers: list[tuple[bytes, bytes, asyncio.Event | None]] = [
        (b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\n", b"hello", None),  # body right behind: awaited
        (b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\n", b"later", late),  # body held back: streamed
        (b"HTTP/1.1 200 OK\r\ncontent-length: %d\r\n\r\n" % len(big), big, large),  # over the limit: not awaited
        (b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n", b"2\r\nok\r\n0\r\n\r\n", None),  # no length
    ]

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while answers:
            try:
                await read_request(reader)
            except asyncio.IncompleteReadError:
                return
            head, body, hold = answers.pop(0)
            writer.write(head)
            await writer.drain()  # the head goes out on its own, as uvicorn's first write
            if hold is not None:
                await hold.wait()
            else:
                await asyncio.sleep(0.01)  # the body a moment behind its head: the client reads the head alone
            writer.write(body)
            await writer.drain()

    async def scenario(client: AgentHttp, connections: list[int]) -> None:
        response = await client.request("POST", "/invocations", [], b"{}")
        assert await response.complete_body_soon(64 * 1024, 10.0) == b"hello"
        await response.aclose()

        for event, limit, expected in ((late, 64 * 1024, b"later"), (large, 64 * 1024, big), (None, 10**6, b"ok")):
            response = await client.request("POST", "/invocations", [], b"{}")
            assert await response.complete_body_soon(limit, 0.05) is None  # not (all) there: the stream carries it
            if event is not None:
                event.set()
            assert b"".join([piece async for piece in response.iter_raw()]) == expected
            await response.aclose()
        assert len(connections) == 1  # every answer complete: one kept-alive connection

    serve(handler, scenario)
