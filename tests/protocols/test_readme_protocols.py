"""The README tour's protocol lines (its ``sh`` block), run as written with the hangar CLI, then each deployed
runtime answered by its protocol's client: the lines must keep working."""

from __future__ import annotations

import asyncio
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx
from mcp.client.session import ClientSession

from tests.protocols.support import SESSION_HEADER, SigV4Httpx, SigV4Httpx2, admin_key, invocations_url
from tests.protocols.test_mcp import with_client
from tests.support.server import HangarServer

ROOT = Path(__file__).resolve().parents[2]


def readme_protocol_block() -> str:
    section = (ROOT / "README.md").read_text().split("\n## A tour\n", 1)[1].split("\n## ", 1)[0]
    (block,) = re.findall(r"```sh\n(.*?)```", section, flags=re.DOTALL)
    return str(block)


def test_readme_protocol_lines_deploy_runtimes_that_answer(server: HangarServer, control: Any) -> None:
    block = readme_protocol_block()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "HANGAR_"))}
    env.update(HANGAR_DATA_DIR=str(server.data_dir), HANGAR_ENDPOINT_URL=server.url)
    env["PATH"] = f"{Path(sys.executable).parent}:{env.get('PATH', '/usr/bin:/bin')}"
    done = subprocess.run(
        ["bash", "-euo", "pipefail", "-c", block], cwd=ROOT, env=env, capture_output=True, text=True, timeout=900
    )
    assert done.returncode == 0, done.stdout + done.stderr
    runtimes = {r["agentRuntimeName"]: r for r in control.list_agent_runtimes()["agentRuntimes"]}
    assert {"tools", "shouter", "agui", "langgraph", "strands", "crewai"} <= set(runtimes)
    framework = control.get_agent_runtime(agentRuntimeId=runtimes["langgraph"]["agentRuntimeId"])
    assert framework["status"] == "READY" and framework["environmentVariables"]["MODEL_ID"] == "my-model"
    found = {name: control.get_agent_runtime(agentRuntimeId=runtimes[name]["agentRuntimeId"]) for name in runtimes}

    async def add(session: ClientSession) -> str:
        result = await session.call_tool("add", {"a": 1, "b": 2})
        return "".join(getattr(block, "text", "") for block in result.content)

    answer, _ = asyncio.run(with_client(invocations_url(server, found["tools"]), SigV4Httpx2(admin_key(server)), add))
    assert answer == "3"
    card = httpx.get(
        invocations_url(server, found["shouter"]).replace("?qualifier=DEFAULT", "/.well-known/agent-card.json"),
        auth=SigV4Httpx(admin_key(server)),
        timeout=120,
    )
    assert card.status_code == 200 and card.json()["name"] == "shouter"
    run = (
        '{"threadId": "t", "runId": "r", "messages": [{"id": "m", "role": "user", "content": "hi"}],'
        ' "state": {}, "tools": [], "context": [], "forwardedProps": {}}'
    )
    events = httpx.post(
        invocations_url(server, found["agui"]),
        content=run,
        headers={"Content-Type": "application/json", SESSION_HEADER: "readme-agui-" + "0" * 30},
        auth=SigV4Httpx(admin_key(server)),
        timeout=120,
    )
    assert events.status_code == 200 and '"type":"RUN_FINISHED"' in events.text
