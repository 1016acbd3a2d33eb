"""hangar.sdk: the framework an agent runs inside a Hangar sandbox.

API- and wire-compatible with ``bedrock_agentcore.runtime``: an agent written for AgentCore runs unchanged after
``from hangar.sdk import BedrockAgentCoreApp``. Depends on starlette and uvicorn only, and on no other part of
Hangar, because it is copied alone into agent environments.
"""

from ._app import AgentApp, BedrockAgentCoreApp
from ._context import BedrockAgentCoreContext, ConfigBundleRef, RequestContext
from ._headers import RESTRICTED_HEADERS, is_forwardable_header
from ._identity import TokenPoller, requires_access_token, requires_api_key, requires_wat
from ._identity_client import IdentityServiceError
from ._logging import RequestContextFormatter
from ._ping import PingStatus
from ._server import SANDBOX_MARKER_ENV

__all__ = [
    "RESTRICTED_HEADERS",
    "SANDBOX_MARKER_ENV",
    "AgentApp",
    "BedrockAgentCoreApp",
    "BedrockAgentCoreContext",
    "ConfigBundleRef",
    "IdentityServiceError",
    "PingStatus",
    "RequestContext",
    "RequestContextFormatter",
    "TokenPoller",
    "is_forwardable_header",
    "requires_access_token",
    "requires_api_key",
    "requires_wat",
]
