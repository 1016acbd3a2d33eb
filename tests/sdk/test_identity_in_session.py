"""A ``hangar.sdk`` agent deployed in Hangar gets its API key and an M2M token through its session's identity
endpoint: with no botocore in its environment through the SDK's stdlib transport (SigV4 with the session's
container credentials, TLS trusted through ``AWS_CA_BUNDLE``), cold and forked from a template; and with botocore
installed through botocore, forked (its client is built in the fork, at the first call, with the fork's own
credentials).
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from typing import Any

import jwt
import pytest

from tests.control.support import signed
from tests.dataplane.support import BUCKET, deploy, new_session_id, seeded_server, wait_for
from tests.support.idp_common import RunningIdp
from tests.support.idp_panva import start_panva
from tests.support.server import HangarServer

API_KEY = f"sk-session-{uuid.uuid4().hex}"
AGENT = "sdkidentity"  # nothing but hangar.sdk: the stdlib transport
AGENT_WITH_BOTOCORE = "sdkidentityboto"  # the same code with botocore installed: the botocore transport

# The agent's whole artifact: hangar.sdk only (Hangar ships it into every environment), no requirements.
AGENT_MAIN = """
import asyncio
import importlib.util
import os
import sys

from hangar.sdk import BedrockAgentCoreApp, requires_access_token, requires_api_key, requires_wat

app = BedrockAgentCoreApp()


@requires_api_key(provider_name=os.environ["API_KEY_PROVIDER"])
def api_key(*, api_key):
    return api_key


@requires_access_token(provider_name=os.environ["OAUTH2_PROVIDER"], scopes=["reports:read"], auth_flow="M2M")
async def m2m(*, access_token):
    return access_token


@requires_wat()
def wat(*, identity_wat):
    return identity_wat


@app.entrypoint
async def invoke(payload):
    out = {"botocore_installed": importlib.util.find_spec("botocore") is not None}
    if payload.get("action") == "missing":
        try:
            requires_api_key(provider_name="no-such-provider")(lambda api_key: api_key)()
        except Exception as exc:  # IdentityServiceError without botocore, ClientError with it
            out["error"] = [type(exc).__name__, exc.response["Error"]["Code"]]
        return out
    out["api_key"] = await asyncio.to_thread(api_key)
    out["token"] = await m2m()
    out["wat"] = wat()
    out["botocore_loaded"] = "botocore" in sys.modules
    return out


if __name__ == "__main__":
    app.run()
"""


@pytest.fixture(scope="module")
def hangar() -> Iterator[HangarServer]:
    with seeded_server("hangar-sdk-identity-", ()) as server:
        for name, requirements in ((AGENT, ""), (AGENT_WITH_BOTOCORE, "botocore>=1.35,<2\n")):
            agent_dir = server.data_dir / "artifacts" / BUCKET / name
            agent_dir.mkdir(parents=True)
            (agent_dir / "main.py").write_text(AGENT_MAIN)
            (agent_dir / "requirements.txt").write_text("# hangar.sdk is provided inside the sandbox\n" + requirements)
        backend = signed(server, "GET", "/hangar/sessions/").json()["backend"]["backend"]
        if backend != "namespace":
            pytest.skip(f"the identity channel needs the namespace backend, this host has {backend}")
        yield server


@pytest.fixture(scope="module")
def idp(hangar: HangarServer) -> Iterator[RunningIdp]:
    running = start_panva(hangar.data_dir.parent / "idp")
    yield running
    running.stop()


@pytest.fixture(scope="module")
def providers(hangar: HangarServer, idp: RunningIdp) -> dict[str, str]:
    control = hangar.boto3_client("bedrock-agentcore-control")
    names = {"API_KEY_PROVIDER": f"key-{uuid.uuid4().hex[:8]}", "OAUTH2_PROVIDER": f"oauth-{uuid.uuid4().hex[:8]}"}
    control.create_api_key_credential_provider(name=names["API_KEY_PROVIDER"], apiKey=API_KEY)
    control.create_oauth2_credential_provider(
        name=names["OAUTH2_PROVIDER"],
        credentialProviderVendor="CustomOauth2",
        oauth2ProviderConfigInput={
            "customOauth2ProviderConfig": {
                "oauthDiscovery": {"discoveryUrl": idp.discovery_url},
                "clientId": "agent-client",
                "clientSecret": idp.clients["agent-client"],
            }
        },
    )
    return names


def invoke(hangar: HangarServer, runtime: dict[str, Any], session_id: str, payload: dict[str, Any]) -> Any:
    answer = hangar.boto3_client("bedrock-agentcore").invoke_agent_runtime(
        agentRuntimeArn=runtime["agentRuntimeArn"], runtimeSessionId=session_id, payload=json.dumps(payload)
    )
    return json.loads(answer["response"].read())


def wait_for_template(hangar: HangarServer, key: str) -> None:
    """Until the version's warm template runs, so the session is forked from it (the agent imported in the
    template, with the template's environment: credentials must come from the fork's own session)."""

    def alive() -> bool:
        state = signed(hangar, "GET", "/hangar/sessions/").json()["templates"]["versions"].get(key)
        if state is not None and state["unsafeReason"] is not None:
            raise AssertionError(f"the template of {key} is unusable: {state['unsafeReason']}")
        return bool(state and state["template"] and state["template"]["alive"])

    wait_for(alive, timeout=180)


def start_kind(hangar: HangarServer, session_id: str) -> str:
    for entry in signed(hangar, "GET", "/hangar/sessions/").json()["sessions"]:
        if entry["runtimeSessionId"] == session_id:
            return str(entry["startKind"])
    raise AssertionError(f"no session {session_id}")


@pytest.mark.parametrize(
    ("agent", "template"),
    [(AGENT, "off"), (AGENT, "on"), (AGENT_WITH_BOTOCORE, "on")],
    ids=["cold", "fork", "botocore-fork"],
)
def test_a_hangar_sdk_agent_gets_its_credentials_in_a_session(
    hangar: HangarServer, idp: RunningIdp, providers: dict[str, str], agent: str, template: str
) -> None:
    control = hangar.boto3_client("bedrock-agentcore-control")
    runtime = deploy(control, agent, environmentVariables={**providers, "HANGAR_TEMPLATE": template})
    if template == "on":
        wait_for_template(hangar, f"{runtime['agentRuntimeId']}/{runtime['agentRuntimeVersion']}")
    session_id = new_session_id()
    out = invoke(hangar, runtime, session_id, {"action": "all"})
    with_botocore = agent == AGENT_WITH_BOTOCORE
    assert out["botocore_installed"] is with_botocore and out["botocore_loaded"] is with_botocore
    assert out["api_key"] == API_KEY
    claims = jwt.decode(out["token"], options={"verify_signature": False})
    assert claims["iss"] == idp.issuer and claims["client_id"] == "agent-client"
    assert jwt.decode(out["wat"], options={"verify_signature": False})["wl"] == runtime["agentRuntimeId"]
    assert start_kind(hangar, session_id) == ("cold" if template == "off" else "fork")
    missing = invoke(hangar, runtime, session_id, {"action": "missing"})["error"]
    assert missing == ["ResourceNotFoundException", "ResourceNotFoundException"]
