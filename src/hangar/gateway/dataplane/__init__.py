"""The data plane (``bedrock-agentcore`` service): one module per operation.

Every route authenticates itself (``auth="custom"``): how depends on the runtime (SigV4, or a Bearer JWT for
runtimes with a customJWTAuthorizer), which is known only once the target is resolved.
"""

from hangar.gateway.dataplane.agent_card import get_agent_card
from hangar.gateway.dataplane.commands import invoke_command
from hangar.gateway.dataplane.invoke import invoke
from hangar.gateway.dataplane.mcp import end_mcp_session
from hangar.gateway.dataplane.shells import shell_socket
from hangar.gateway.dataplane.stop_session import stop_session
from hangar.gateway.dataplane.websocket import websocket_proxy
from hangar.gateway.routing import Route

ROUTES = [
    Route("POST", "/runtimes/{agentRuntimeArn}/invocations", invoke, name="InvokeAgentRuntime", auth="custom"),
    Route(  # the MCP client's goodbye (streamable HTTP): ends the MCP session and its Hangar session
        "DELETE", "/runtimes/{agentRuntimeArn}/invocations", end_mcp_session, name="EndMcpSession", auth="custom"
    ),
    Route(
        "GET",
        "/runtimes/{agentRuntimeArn}/invocations/.well-known/agent-card.json",
        get_agent_card,
        name="GetAgentCard",
        auth="custom",
    ),
    Route(
        "POST", "/runtimes/{agentRuntimeArn}/commands", invoke_command, name="InvokeAgentRuntimeCommand", auth="custom"
    ),
    Route(
        "POST", "/runtimes/{agentRuntimeArn}/stopruntimesession", stop_session, name="StopRuntimeSession", auth="custom"
    ),
    Route(
        "WEBSOCKET",
        "/runtimes/{agentRuntimeArn}/ws",
        websocket_proxy,
        name="InvokeAgentRuntimeWebSocket",
        auth="custom",
    ),
    Route(
        "WEBSOCKET",
        "/runtimes/{agentRuntimeArn}/ws/shells",
        shell_socket,
        name="InvokeAgentRuntimeCommandShell",
        auth="custom",
    ),
]
