"""The same trivial agent on the real bedrock-agentcore SDK (the reference floor)."""

import os

from bedrock_agentcore.runtime import BedrockAgentCoreApp

app = BedrockAgentCoreApp()


@app.entrypoint
def invoke(payload):  # type: ignore[no-untyped-def]
    return payload


if __name__ == "__main__":
    app.run(port=int(os.environ.get("PORT", "8080")), host="127.0.0.1")
