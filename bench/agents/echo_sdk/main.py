"""Trivial agent on hangar.sdk: answers the payload back."""

import os

from hangar.sdk import BedrockAgentCoreApp

app = BedrockAgentCoreApp()


@app.entrypoint
def invoke(payload):  # type: ignore[no-untyped-def]
    return payload


if __name__ == "__main__":
    app.run(port=int(os.environ.get("PORT", "8080")))
