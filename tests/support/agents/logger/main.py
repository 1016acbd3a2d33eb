"""Test agent (hangar.sdk) for session logs: prints what the payload says to stdout and stderr, or floods stdout."""

from __future__ import annotations

import sys
from typing import Any

from hangar.sdk import BedrockAgentCoreApp, RequestContext

print("logger agent starting", flush=True)
app = BedrockAgentCoreApp()


@app.entrypoint
def invoke(payload: dict[str, Any], context: RequestContext) -> dict[str, Any]:
    for line in payload.get("out", []):
        print(line, flush=True)
    for line in payload.get("err", []):
        print(line, file=sys.stderr, flush=True)
    flood = int(payload.get("flood", 0))  # bytes of stdout, in 1 KiB lines
    chunk = "x" * 1023 + "\n"
    for _ in range(flood // 1024):
        sys.stdout.write(chunk)
    sys.stdout.flush()
    if payload.get("partial"):
        sys.stdout.write(payload["partial"])  # no newline: written once it stops growing
        sys.stdout.flush()
    return {"ok": True}


if __name__ == "__main__":
    app.run()
