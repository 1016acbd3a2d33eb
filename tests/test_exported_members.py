"""hangar.sdk's public surface is deliberate: ``__all__`` is pinned, and the SDK stays light and self-contained.

The SDK is copied alone into agent environments, so it may import nothing else of Hangar and no third-party
package beyond starlette and uvicorn (and anyio, which starlette itself brings).
"""

from __future__ import annotations

import importlib
import json
import pkgutil
import subprocess
import sys

import hangar.sdk

PUBLIC = [
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
# starlette and uvicorn, plus what they bring: anyio and its helpers (exceptiongroup is its backport on Python 3.10).
ALLOWED_TOP_LEVEL = {
    *("hangar", "starlette", "uvicorn"),
    *("anyio", "sniffio", "idna", "typing_extensions", "exceptiongroup"),
    "python_multipart",  # starlette imports its form parser when installed (mcp, a test dependency, installs it)
}


def private_modules() -> list[str]:
    return sorted(info.name for info in pkgutil.iter_modules(hangar.sdk.__path__) if info.name.startswith("_"))


def test_public_names_are_pinned() -> None:
    assert hangar.sdk.__all__ == PUBLIC
    for name in PUBLIC:
        assert getattr(hangar.sdk, name) is not None


def test_bedrock_name_is_the_same_class() -> None:
    assert hangar.sdk.BedrockAgentCoreApp is hangar.sdk.AgentApp


def test_every_private_module_declares_what_it_exports() -> None:
    assert private_modules(), "hangar.sdk should be split into private modules"
    for name in private_modules():
        module = importlib.import_module(f"hangar.sdk.{name}")
        exported = getattr(module, "__all__", None)
        assert isinstance(exported, list) and exported, f"hangar.sdk.{name} has no __all__"
        missing = [item for item in exported if not hasattr(module, item)]
        assert not missing, f"hangar.sdk.{name}.__all__ names undefined members {missing}"


def test_package_reexports_only_private_module_members() -> None:
    declared = {item for name in private_modules() for item in importlib.import_module(f"hangar.sdk.{name}").__all__}
    assert set(PUBLIC) <= declared


def test_sdk_imports_nothing_else_of_hangar_nor_heavy_dependencies() -> None:
    probe = (
        "import json, sys; import hangar.sdk; "
        "print(json.dumps(sorted({name for name in sys.modules if not name.startswith('_')})))"
    )
    output = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True, timeout=60)
    loaded = set(json.loads(output.stdout))
    hangar_modules = {name for name in loaded if name.split(".")[0] == "hangar"}
    assert hangar_modules == {"hangar", "hangar.sdk"} | {f"hangar.sdk.{name}" for name in private_modules()}
    third_party = {
        name.split(".")[0]
        for name in loaded
        if name.split(".")[0] not in sys.stdlib_module_names and name.split(".")[0] not in ALLOWED_TOP_LEVEL
    }
    assert not third_party, f"hangar.sdk pulled in {sorted(third_party)}"
