"""Names and ids of runtimes, endpoints and versions (patterns from the AgentCore control-plane model)."""

from __future__ import annotations

import secrets
import string

RUNTIME_NAME = r"[a-zA-Z][a-zA-Z0-9_]{0,47}"
RUNTIME_NAME_HINT = (
    " (a runtime name starts with a letter, then up to 47 letters, digits or underscores;"
    " hyphens and other characters are not allowed, e.g. my_agent instead of my-agent)"
)
ENDPOINT_NAME = r"[a-zA-Z][a-zA-Z0-9_]{0,47}"
ENDPOINT_NAME_HINT = " (a letter, then up to 47 letters, digits or underscores)"
RUNTIME_ID = r"[a-zA-Z][a-zA-Z0-9_]{0,99}-[a-zA-Z0-9]{10}"
VERSION = r"[1-9][0-9]{0,4}"
MAX_VERSION = 99999
CLIENT_TOKEN = r"[a-zA-Z0-9](-*[a-zA-Z0-9]){0,256}"
DEFAULT_ENDPOINT = "DEFAULT"
LOCAL_NODE = "local"  # the node of every session when sandboxes run in the gateway's own process

_SUFFIX_ALPHABET = string.ascii_letters + string.digits


def random_suffix() -> str:
    """Ten random letters/digits: the part of an id that makes it unique."""
    return "".join(secrets.choice(_SUFFIX_ALPHABET) for _ in range(10))


def new_runtime_id(name: str) -> str:
    """``{name}-{10 alnum}``, as AgentCore forms runtime ids."""
    return f"{name}-{random_suffix()}"


def new_endpoint_id(name: str) -> str:
    """Endpoint ids follow the runtime-id pattern too."""
    return f"{name}-{random_suffix()}"
