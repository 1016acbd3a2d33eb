"""Test agent on ``bedrock_agentcore``'s own AG-UI helper (``AGUIApp``, whose ``run`` hands it to ``uvicorn.run``), in
the decorator form its README shows: each run reports how many runs this process has served (a list made at import)."""

from __future__ import annotations

from collections.abc import AsyncIterator

from ag_ui.core import BaseEvent, RunAgentInput, RunFinishedEvent, RunStartedEvent, StateSnapshotEvent
from bedrock_agentcore.runtime import AGUIApp

RUNS: list[str] = []
app = AGUIApp()


@app.entrypoint
async def agent(run: RunAgentInput) -> AsyncIterator[BaseEvent]:
    RUNS.append(run.run_id)
    yield RunStartedEvent(thread_id=run.thread_id, run_id=run.run_id)
    yield StateSnapshotEvent(snapshot={"runs": len(RUNS)})
    yield RunFinishedEvent(thread_id=run.thread_id, run_id=run.run_id)


if __name__ == "__main__":
    app.run(host="0.0.0.0")
