"""The console end to end in a real browser: Playwright driving Debian's Chromium against a real ``hangar serve``.

Sign in, see the deployed runtime, invoke it and watch the streamed answer arrive (the first event is on the page
while the agent still holds the stream open), follow the session's log live, stop the session, sign out; the same
at phone width (375 px); axe-core finds no serious or critical accessibility violations. Each page's screenshot is
written to docs/console/.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.dataplane.support import session_state
from tests.support.idp_common import CACHE_DIR
from tests.support.server import HangarServer

playwright_api = pytest.importorskip("playwright.sync_api", reason="pip install playwright (the test extra)")

CHROMIUM = Path("/usr/bin/chromium")
SHOTS = Path(__file__).resolve().parents[2] / "docs" / "console"
PHONE = {"width": 375, "height": 740}
SESSION_ID = "console-browser-test-session-000000000001"


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    if not CHROMIUM.exists():
        pytest.skip("Debian's chromium is missing (scripts/system-deps test)")
    with playwright_api.sync_playwright() as driver:
        launched = driver.chromium.launch(executable_path=str(CHROMIUM), args=["--no-sandbox"])
        try:
            yield launched
        finally:
            launched.close()


@pytest.fixture(scope="module")
def axe_script() -> Path:
    """axe-core from npm, installed once into tests/.cache (as the IdP tests install theirs)."""
    directory = CACHE_DIR / "axe-core"
    script = directory / "node_modules" / "axe-core" / "axe.min.js"
    if not script.exists():
        if shutil.which("npm") is None:
            pytest.fail("axe-core needs npm (scripts/system-deps test)")
        directory.mkdir(parents=True, exist_ok=True)
        (directory / "package.json").write_text(json.dumps({"private": True}))
        subprocess.run(
            ["npm", "install", "--no-audit", "--no-fund", "--loglevel=error", "axe-core@4"],
            cwd=directory,
            check=True,
            timeout=300,
        )
    return script


def shot(page: Any, name: str) -> None:
    SHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SHOTS / f"{name}.png"), full_page=True)


def sign_in(page: Any, server: HangarServer, key: tuple[str, str]) -> None:
    page.goto(f"{server.url}/console/runtimes")
    assert page.url.endswith("/console/login")  # no session: the login page
    page.get_by_label("Access key id").fill(key[0])
    page.get_by_label("Secret access key").fill(key[1])
    page.get_by_role("button", name="Sign in").click()
    page.wait_for_url("**/console/runtimes")


def serious_violations(page: Any, axe_script: Path) -> list[str]:
    page.add_script_tag(path=str(axe_script))
    result = page.evaluate("async () => await axe.run(document, {resultTypes: ['violations']})")
    return [
        f"{v['id']} ({v['impact']}): {[n['target'] for n in v['nodes']]}"
        for v in result["violations"]
        if v["impact"] in ("serious", "critical")
    ]


def test_sign_in_invoke_streaming_stop_and_sign_out(
    browser: Any, server: HangarServer, runtime: dict[str, Any], admin_key: tuple[str, str]
) -> None:
    context = browser.new_context(viewport={"width": 1200, "height": 900})
    page = context.new_page()
    opened = page.goto(f"{server.url}/console/login")
    assert opened is not None and opened.status == 200
    shot(page, "login")
    sign_in(page, server, admin_key)
    cookie = next(c for c in context.cookies() if c["name"] == "hangar_console")
    assert cookie["httpOnly"] and cookie["sameSite"] == "Strict"
    assert admin_key[1] not in json.dumps(context.storage_state())  # the secret is nowhere in the browser

    name = runtime["agentRuntimeName"]
    row = page.get_by_role("row").filter(has_text=name)
    playwright_api.expect(row).to_contain_text("READY")
    shot(page, "runtimes")

    page.get_by_role("link", name=name).click()
    page.wait_for_url(f"**/console/runtimes/{runtime['agentRuntimeId']}")
    playwright_api.expect(page.get_by_role("heading", level=1)).to_have_text(name)
    playwright_api.expect(page.get_by_role("heading", name="Versions")).to_be_visible()
    playwright_api.expect(page.get_by_role("heading", name="Build log of version 1")).to_be_visible()
    shot(page, "runtime")

    page.get_by_role("link", name="Invoke this runtime").click()
    page.get_by_label("Session id").fill(SESSION_ID)
    page.get_by_label("Payload (JSON)").fill(json.dumps({"action": "stream", "prompt": "hi"}))
    page.get_by_role("button", name="Send", exact=True).click()
    events = page.locator("#events li")
    # The agent sent its first event and now holds the stream open: the page shows it before the answer ends.
    playwright_api.expect(events).to_have_count(1)
    playwright_api.expect(events.first).to_contain_text("hi: first")
    playwright_api.expect(page.locator("#answer-status")).to_have_text("Streaming…")
    shot(page, "invoke-streaming")

    data = server.boto3_client("bedrock-agentcore")
    released = data.invoke_agent_runtime(
        agentRuntimeArn=runtime["agentRuntimeArn"],
        runtimeSessionId=SESSION_ID,
        payload=json.dumps({"action": "release"}).encode(),
    )
    assert json.loads(released["response"].read()) == {"released": True}
    playwright_api.expect(page.locator("#answer-status")).to_have_text("Done (200).")
    playwright_api.expect(events).to_have_count(3)
    playwright_api.expect(events.nth(1)).to_contain_text('"released": true')
    # The same session over a WebSocket, relayed to the agent's /ws.
    page.get_by_label("Message", exact=True).fill("ping")
    page.get_by_role("button", name="Send over WebSocket").click()
    messages = page.get_by_role("list", name="WebSocket messages").get_by_role("listitem")
    playwright_api.expect(messages.filter(has_text="← echo: ping")).to_have_count(1)
    page.get_by_label("Message", exact=True).fill("pong")
    page.get_by_role("button", name="Send over WebSocket").click()
    playwright_api.expect(messages.filter(has_text="← echo: pong")).to_have_count(1)
    shot(page, "invoke")

    page.get_by_role("link", name="Sessions").click()
    live_row = page.locator(f'tr[data-session="{SESSION_ID}"]')
    # Live: Idle, or still Active while the WebSocket relay the playground just left is winding down.
    playwright_api.expect(live_row).to_contain_text(re.compile("Idle|Active"))
    playwright_api.expect(live_row).to_contain_text(re.compile(r"\d+\.\d MiB"))  # the sandbox's memory use
    playwright_api.expect(live_row).to_contain_text(re.compile(r"\d+\.\d\d s"))  # and its CPU time
    shot(page, "sessions")

    live_row.get_by_role("link", name=f"Log of session {SESSION_ID}").click()
    lines = page.get_by_role("list", name="Log events").get_by_role("listitem")
    playwright_api.expect(lines.filter(has_text="streaming for hi")).to_have_count(1, timeout=15_000)
    playwright_api.expect(lines.filter(has_text="releasing the stream")).to_have_count(1, timeout=15_000)
    playwright_api.expect(page.locator("#log-status")).to_have_text("Following live…")
    # Output written while the page is open appears on it without a reload.
    data.invoke_agent_runtime(
        agentRuntimeArn=runtime["agentRuntimeArn"],
        runtimeSessionId=SESSION_ID,
        payload=json.dumps({"say": "written while the page follows"}).encode(),
    )["response"].read()
    playwright_api.expect(lines.filter(has_text="written while the page follows")).to_have_count(1, timeout=15_000)
    shot(page, "logs")
    page.get_by_role("link", name="Sessions").click()
    live_row.get_by_role("button", name=f"Stop session {SESSION_ID}").click()
    playwright_api.expect(page.get_by_role("status")).to_contain_text(f"Stopped session {SESSION_ID}")
    assert session_state(server, runtime["agentRuntimeId"], SESSION_ID) == "Terminated"

    page.get_by_role("button", name="Sign out").click()
    page.wait_for_url("**/console/login")
    page.goto(f"{server.url}/console/sessions")
    assert page.url.endswith("/console/login")  # the session ended with the sign-out
    context.close()


def test_phone_width_and_accessibility(
    browser: Any, server: HangarServer, runtime: dict[str, Any], admin_key: tuple[str, str], axe_script: Path
) -> None:
    context = browser.new_context(viewport=PHONE, bypass_csp=True)  # bypass_csp: axe is injected inline
    page = context.new_page()
    page.goto(f"{server.url}/console/login")
    assert serious_violations(page, axe_script) == []
    sign_in(page, server, admin_key)
    paths = {
        "runtimes": "/console/runtimes",
        "runtime": f"/console/runtimes/{runtime['agentRuntimeId']}",
        "sessions": "/console/sessions",
        "logs": f"/console/logs/{runtime['agentRuntimeId']}/{SESSION_ID}",
        "invoke": f"/console/invoke?runtime={runtime['agentRuntimeId']}",  # last: the playground is used below
    }
    for name, path in paths.items():
        page.goto(server.url + path)
        playwright_api.expect(page.get_by_role("heading", level=1)).to_be_visible()
        # Nothing wider than the phone: the page itself never scrolls sideways (wide tables scroll in their box).
        assert page.evaluate("document.documentElement.scrollWidth") <= PHONE["width"], name
        assert serious_violations(page, axe_script) == [], name
        shot(page, f"phone-{name}")
    page.get_by_label("Payload (JSON)").fill(json.dumps({"hello": "phone"}))
    page.get_by_role("button", name="Send", exact=True).click()
    playwright_api.expect(page.locator("#answer")).to_contain_text('"echo"')
    playwright_api.expect(page.locator("#answer-status")).to_have_text("Done (200).")
    context.close()
