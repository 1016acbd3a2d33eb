"""Trivial agent on hangar.sdk: answers the payload back."""

from hangar.sdk import BedrockAgentCoreApp

app = BedrockAgentCoreApp()


@app.entrypoint
def invoke(payload):  # type: ignore[no-untyped-def]
    return payload


if __name__ == "__main__":
    app.run()
