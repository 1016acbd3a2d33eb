"""Interactive shells (``/ws/shells``) in cluster mode: a Ray head, two ``hangar node``s, two gateways on one
throwaway PostgreSQL. A shell opened through one gateway runs in the session's sandbox on its node (commands, resize,
Ctrl-C, heartbeat, exit status); a client that drops and reconnects through the OTHER gateway with its shell id gets
the output it missed (replay) and the same shell, and a third client takes it over; the SDK's presigned URL and OAuth
subprotocol are read by the gateway as on one server; the shell cap is per node; the ``hangar shell`` CLI pipes a
script through a gateway."""

from __future__ import annotations

import asyncio
import json
import os
import re
import shutil
import socket
import subprocess
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlencode

import boto3
import pytest
import websockets
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.config import Config
from botocore.credentials import Credentials
from websockets.asyncio.client import ClientConnection
from websockets.exceptions import ConnectionClosed, InvalidStatus

from tests.dataplane.support import BUCKET, deploy, wait_for, world_readable_dir
from tests.support.postgres import PostgresCluster
from tests.support.postgres import unavailable_reason as postgres_missing
from tests.support.ray_cluster import NodeProcess, RayCluster, ray_cluster  # noqa: F401 - the fixture
from tests.support.server import HANGAR_BIN, HangarServer, read_admin_key

AGENT = Path(__file__).parent / "agents" / "nodeecho"
SESSION_HEADER = "X-Amzn-Bedrock-AgentCore-Runtime-Session-Id"
STDIN, STDOUT, STDERR, STATUS, RESIZE, HEARTBEAT, CLOSE = 0x00, 0x01, 0x02, 0x03, 0x04, 0x05, 0xFF
pytestmark = pytest.mark.timeout(900)


@dataclass
class World:
    gateways: list[HangarServer]
    nodes: list[NodeProcess]
    arn: str
    runtime_id: str

    def data(self, gateway: int) -> Any:
        key_id, secret = read_admin_key(self.gateways[0].credentials_file)
        return boto3.client(
            "bedrock-agentcore",
            endpoint_url=self.gateways[gateway].url,
            region_name="us-west-2",
            aws_access_key_id=key_id,
            aws_secret_access_key=secret,
            config=Config(retries={"max_attempts": 1, "mode": "standard"}, read_timeout=300),
        )

    def invoke(self, gateway: int, session_id: str) -> dict[str, Any]:
        answer = self.data(gateway).invoke_agent_runtime(
            agentRuntimeArn=self.arn, runtimeSessionId=session_id, payload=b"{}"
        )
        return dict(json.loads(answer["response"].read()))

    def command(self, gateway: int, session_id: str, command: str) -> int:
        """Run ``command`` in the session's sandbox (InvokeAgentRuntimeCommand); its exit code."""
        answer = self.data(gateway).invoke_agent_runtime_command(
            agentRuntimeArn=self.arn, runtimeSessionId=session_id, body={"command": command}
        )
        chunks = [event["chunk"] for event in answer["stream"]]
        return int(chunks[-1]["contentStop"]["exitCode"])

    def cli(self, gateway: int, *args: str, stdin: bytes | None = None) -> subprocess.CompletedProcess[bytes]:
        env = {key: value for key, value in os.environ.items() if not key.startswith(("AWS_", "HANGAR_"))}
        env.update(HANGAR_ENDPOINT_URL=self.gateways[gateway].url, HANGAR_DATA_DIR=str(self.gateways[0].data_dir))
        return subprocess.run([str(HANGAR_BIN), *args], env=env, input=stdin, capture_output=True, timeout=180)

    def session(self, session_id: str) -> dict[str, Any] | None:
        """The session's live entry in ``hangar sessions list`` (every node's sessions, each with its node)."""
        done = self.cli(0, "sessions", "list", "--all", "-o", "json")
        assert done.returncode == 0, done
        for entry in json.loads(done.stdout):
            if entry["runtimeSessionId"] == session_id and entry["state"] != "Terminated":
                return dict(entry)
        return None

    def stop(self, *session_ids: str) -> None:
        for sid in session_ids:
            self.data(1).stop_runtime_session(agentRuntimeArn=self.arn, runtimeSessionId=sid)

    def url(self, gateway: int, shell_id: str | None = None) -> str:
        suffix = f"?{urlencode({'shellId': shell_id})}" if shell_id else ""
        return f"ws://127.0.0.1:{self.gateways[gateway].port}/runtimes/{quote(self.arn, safe='')}/ws/shells{suffix}"

    def signed(self, url: str, session_id: str) -> dict[str, str]:
        key_id, secret = read_admin_key(self.gateways[0].credentials_file)
        request = AWSRequest(method="GET", url=url.replace("ws://", "http://"), headers={SESSION_HEADER: session_id})
        SigV4Auth(Credentials(key_id, secret), "bedrock-agentcore", "us-west-2").add_auth(request)
        return {k: v for k, v in request.headers.items() if k.lower() != "host"}

    async def connect(self, gateway: int, session_id: str, shell_id: str) -> ClientConnection:
        url = self.url(gateway, shell_id)
        return await websockets.connect(
            url, additional_headers=self.signed(url, session_id), max_size=None, open_timeout=180
        )

    async def open(self, gateway: int, session_id: str, shell_id: str) -> tuple[ClientConnection, Term]:
        ws = await self.connect(gateway, session_id, shell_id)
        term = Term(ws)
        channel, _ = await term.frame()
        assert channel == STATUS and term.statuses[0]["metadata"]["shellId"] == shell_id, term.statuses
        return ws, term


class Term:
    """A raw shell client: what came on each channel, read until a pattern shows up on stdout."""

    def __init__(self, ws: ClientConnection) -> None:
        self.ws = ws
        self.out = b""
        self.statuses: list[dict[str, Any]] = []

    async def send(self, channel: int, payload: bytes | str = b"") -> None:
        await self.ws.send(bytes([channel]) + (payload.encode() if isinstance(payload, str) else payload))

    async def type(self, text: str) -> None:
        await self.send(STDIN, text)

    async def frame(self, timeout: float = 60.0) -> tuple[int, bytes]:
        raw = await asyncio.wait_for(self.ws.recv(), timeout)
        assert isinstance(raw, bytes) and raw, raw
        channel, payload = raw[0], raw[1:]
        if channel == STDOUT:
            self.out += payload
        elif channel == STATUS:
            self.statuses.append(json.loads(payload))
        return channel, payload

    async def until(self, pattern: str, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        while not re.search(pattern, self.out.decode(errors="replace")):
            try:
                await self.frame(max(0.1, deadline - time.monotonic()))
            except TimeoutError:
                raise AssertionError(f"no {pattern!r} in {timeout} s; the output: {self.out[-2000:]!r}") from None

    async def end(self, timeout: float = 60.0) -> dict[str, Any]:
        """Frames until the terminating status (empty metadata); then the server closes."""
        while True:
            channel, _ = await self.frame(timeout)
            if channel == STATUS and not self.statuses[-1]["metadata"]:
                return self.statuses[-1]


def give_keys(gateway: HangarServer, data_dir: Path) -> None:
    """The installation's identity keys (token vault, workload access tokens), shared by gateways and nodes."""
    (data_dir / "identity").mkdir(parents=True, exist_ok=True, mode=0o700)
    for path in (gateway.data_dir / "identity").glob("*.key*"):
        if path.name in ("vault.keys", "wat.key"):
            shutil.copy2(path, data_dir / "identity" / path.name)


@pytest.fixture(scope="module")
def world(ray_cluster: RayCluster) -> Iterator[World]:  # noqa: F811 - the imported fixture
    reason = postgres_missing()
    if reason is not None:
        pytest.skip(reason)
    postgres = PostgresCluster.start()  # after the cluster: inside its network namespace, with the nodes
    gateways: list[HangarServer] = []
    try:
        with world_readable_dir("hangar-shells-") as root:
            shutil.copytree(AGENT, root / "artifacts" / BUCKET / "nodeecho")
            env = {
                "HANGAR_DATABASE_URL": postgres.new_database(),
                "HANGAR_ARTIFACTS_DIR": str(root / "artifacts"),
                "HANGAR_CLUSTER": "1",
            }
            gateways.append(HangarServer(data_dir=root / "gw1", env=env).start())
            (root / "gw2").mkdir()
            for name in ("vault.key", "credentials"):  # one installation: the same vault key and admin key
                shutil.copy2(root / "gw1" / name, root / "gw2" / name)
            give_keys(gateways[0], root / "gw2")
            gateways.append(HangarServer(data_dir=root / "gw2", env=env).start())
            runtime = deploy(gateways[0].boto3_client("bedrock-agentcore-control"), "nodeecho")
            for i in (1, 2):
                give_keys(gateways[0], root / f"node{i}")
            nodes = [
                ray_cluster.start_node(
                    root / f"node{i}",
                    database_url=env["HANGAR_DATABASE_URL"],
                    gateway=gateways[0].url,
                    name=f"shnode{i}-{uuid.uuid4().hex[:4]}",
                    slots=8,
                    env={"AWS_SHARED_CREDENTIALS_FILE": str(gateways[0].credentials_file)},
                )
                for i in (1, 2)
            ]
            world = World(gateways, nodes, runtime["agentRuntimeArn"], runtime["agentRuntimeId"])

            def both_listed() -> bool:
                done = world.cli(0, "nodes", "list", "-o", "json")
                return done.returncode == 0 and len(json.loads(done.stdout)) == 2

            wait_for(both_listed, timeout=120)
            yield world
    finally:
        for gateway in gateways:
            gateway.stop()
        postgres.stop()


def new_id() -> str:
    return f"shells-{uuid.uuid4()}"


def started(world: World, gateway: int = 0) -> tuple[str, int, str]:
    """A new session, started by an invocation: its id, its agent's pid and its node."""
    sid = new_id()
    pid = int(world.invoke(gateway, sid)["pid"])
    entry = world.session(sid)
    assert entry is not None and entry["node"] in {n.name for n in world.nodes}, entry
    return sid, pid, str(entry["node"])


def test_a_shell_through_a_gateway_runs_in_the_sessions_sandbox_on_its_node(world: World) -> None:
    sid, pid, _ = started(world)

    async def talk() -> None:
        ws = await world.connect(0, sid, "first")
        assert ws.response is not None
        assert ws.response.headers["X-Amzn-Bedrock-AgentCore-Shell-Id"] == "first"
        assert ws.response.headers[SESSION_HEADER] == sid
        term = Term(ws)
        await term.frame()
        assert term.statuses == [
            {
                "kind": "Status",
                "apiVersion": "v1",
                "metadata": {"shellId": "first", "reconnected": False},
                "status": "Success",
            }
        ]
        # The agent's own process is in this sandbox: the shell runs beside it, not in a new session.
        await term.type(f"echo $((6*7)); tty; stty size; kill -0 {pid} && echo agent-here\n")
        await term.until(r"42\r\n/dev/pts/\d+\r\n24 80\r\nagent-here\r\n")
        await term.send(RESIZE, json.dumps({"width": 132, "height": 43}))
        await term.type("stty size\n")
        await term.until(r"43 132\r\n")
        # The child says it runs (it is the foreground job by then), and only then comes Ctrl-C: the pty's line
        # discipline makes it SIGINT for that job.
        await term.type("sh -c 'echo started-$((1+1)); exec sleep 300'\n")
        await term.until(r"started-2\r\n")
        await term.type("\x03")
        await term.type("echo after-$?\n")
        await term.until(r"after-130\r\n")
        await term.send(HEARTBEAT)
        while (await term.frame())[0] != HEARTBEAT:
            pass
        await term.type("exit 3\n")
        status = await term.end()
        assert status["status"] == "Failure" and status["reason"] == "NonZeroExitCode"
        assert status["details"]["causes"] == [{"reason": "ExitCode", "message": "3"}]
        with pytest.raises(ConnectionClosed):
            await term.frame()
        assert ws.close_code == 1000

    asyncio.run(talk())
    assert world.invoke(1, sid)["pid"] == pid, "the same session, still served"
    world.stop(sid)


def test_reconnect_through_the_other_gateway_replays_what_was_missed(world: World) -> None:
    sid, _, _ = started(world)

    async def talk() -> None:
        ws, term = await world.open(0, sid, "replay")
        await term.type("cd /tmp && X=kept; echo ready-$((1+1))\n")
        await term.until(r"ready-2\r\n")
        # Output that comes only once this client is gone: the shell waits for a file made after the drop.
        await term.type("until [ -e go ]; do sleep 0.1; done; echo missed-$((6*7))-$X; touch done\n")
        await ws.close()  # drops the client, not the shell

    asyncio.run(talk())
    # Detached on the node: the session is Idle again (an attached client keeps it Active).
    wait_for(lambda: (world.session(sid) or {}).get("state") == "Idle", timeout=60)
    assert world.command(1, sid, "touch /tmp/go") == 0
    wait_for(lambda: world.command(1, sid, "test -e /tmp/done") == 0, timeout=60)

    async def again() -> None:
        ws, term = await world.open(1, sid, "replay")  # the other gateway
        assert term.statuses[0]["metadata"]["reconnected"] is True
        await term.until(r"missed-42-kept\r\n")  # replayed: it was printed while nobody was attached
        await term.type("pwd; echo $X\n")
        await term.until(r"/tmp\r\nkept\r\n")  # the same shell: its cwd and variables

        # A client through the first gateway takes the shell over; the second is told with close code 4000.
        ws2, term2 = await world.open(0, sid, "replay")
        assert term2.statuses[0]["metadata"]["reconnected"] is True
        with pytest.raises(ConnectionClosed):
            while True:
                await term.frame()
        assert ws.close_code == 4000
        await term2.type("echo still-$X\n")
        await term2.until(r"still-kept")
        await term2.send(CLOSE)  # the client ends the shell: hangup, then its exit status
        assert (await term2.end())["metadata"] == {}
        await ws2.close()

    asyncio.run(again())
    world.stop(sid)


def test_the_sdk_signed_urls_work_through_a_gateway(world: World) -> None:
    """bedrock-agentcore's presigned shell URL (dialled as built, over loopback) through the gateway that did not
    start the session; its OAuth subprotocol is read as the bearer token there too (this runtime takes SigV4 only)."""
    from bedrock_agentcore.runtime import AgentCoreRuntimeClient
    from bedrock_agentcore.runtime.shell import ShellChannel, ShellFramer

    sid, _, _ = started(world)
    key_id, secret = read_admin_key(world.gateways[0].credentials_file)
    session = boto3.Session(aws_access_key_id=key_id, aws_secret_access_key=secret, region_name="us-west-2")
    client = AgentCoreRuntimeClient("us-west-2", session=session)
    framer = ShellFramer()
    port = world.gateways[1].port

    async def dial(url: str, **kwargs: Any) -> ClientConnection:
        assert url.startswith("wss://bedrock-agentcore.us-west-2.amazonaws.com/"), url
        sock = socket.create_connection(("127.0.0.1", port))
        return await websockets.connect(url.replace("wss://", "ws://"), sock=sock, open_timeout=180, **kwargs)

    async def run(url: str) -> tuple[str, int]:
        out = b""
        async with await dial(url) as ws:
            await ws.send(framer.encode_resize(100, 20))
            await ws.send(framer.encode_stdin("stty size; exit 5\n"))
            while True:
                frame = framer.decode(await asyncio.wait_for(ws.recv(), 60))
                if frame.channel == ShellChannel.STDOUT:
                    out += frame.payload
                elif frame.channel == ShellChannel.STATUS and not frame.json()["metadata"]:
                    return out.decode(), int(frame.json()["details"]["causes"][0]["message"])

    presigned = client.connect_shell_presigned(world.arn, session_id=sid, shell_id="sdk-presigned", expires=60)
    text, code = asyncio.run(run(presigned))
    assert "20 100" in text and code == 5

    url, protocols = client.connect_shell_oauth(world.arn, bearer_token="not.a.jwt", session_id=sid)

    async def oauth() -> InvalidStatus:
        with pytest.raises(InvalidStatus) as refused:
            await dial(url, subprotocols=protocols)
        return refused.value

    refused = asyncio.run(oauth())
    assert refused.response.status_code == 403 and b"SigV4-signed requests only" in refused.response.body
    world.stop(sid)


def test_hangar_shell_pipes_a_script_through_a_gateway(world: World) -> None:
    sid, _, _ = started(world, gateway=1)
    done = world.cli(0, "shell", world.runtime_id, "--session-id", sid, stdin=b"echo piped-$((2+3))\nexit 4\n")
    assert done.returncode == 4, done
    assert b"piped-5" in done.stdout
    world.stop(sid)


def test_at_most_ten_shells_per_runtime_on_each_node(world: World) -> None:
    """The cap is counted per node: a full node refuses the eleventh (402 through the gateway), another node's
    session of the same runtime still opens shells."""
    sid, _, node = started(world)
    other = None
    for _ in range(8):  # placement spreads new sessions: one soon lands on the other node
        candidate, _, where = started(world)
        if where != node:
            other = candidate
            break
        world.stop(candidate)
    assert other is not None, "no session was placed on the second node"

    async def talk() -> None:
        opened = [await world.open(i % 2, sid, f"s{i}") for i in range(10)]
        with pytest.raises(InvalidStatus) as refused:
            await world.connect(1, sid, "eleventh")
        assert refused.value.response.status_code == 402
        assert refused.value.response.headers["x-amzn-errortype"].startswith("ServiceQuotaExceededException")
        assert b"At most 10 shells" in refused.value.response.body
        ws, term = await world.open(0, other, "elsewhere")
        await term.type("echo other-$((3*3))\n")
        await term.until(r"other-9\r\n")
        for each, _ in [*opened, (ws, term)]:
            await each.close()

    asyncio.run(talk())
    world.stop(sid, other)
