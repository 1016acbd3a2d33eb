"""Long-running agent: starts background work and reports HealthyBusy on /ping until it finishes.

``{"action": "start", "seconds": 5}`` starts a background job and returns at once;
``{"action": "status"}`` reports the running jobs and ``{"action": "cancel"}`` stops them all.
While a job runs, ``GET /ping`` says ``HealthyBusy``, which tells the runtime not to reap the idle-looking session.
Run it with ``python examples/async_task/main.py`` (port 8080, or ``$PORT``).
"""

from __future__ import annotations

import asyncio
import os
from typing import Any

from hangar.sdk import BedrockAgentCoreApp

app = BedrockAgentCoreApp()

MAX_SECONDS = 3600.0
background: set[asyncio.Task[None]] = set()


@app.async_task
async def background_job(seconds: float) -> None:
    await asyncio.sleep(seconds)


@app.entrypoint
async def invoke(payload: Any) -> dict[str, Any]:
    action = payload.get("action", "status") if isinstance(payload, dict) else "status"
    if action == "start":
        seconds = max(0.0, min(float(payload.get("seconds", 5)), MAX_SECONDS))
        task = asyncio.get_running_loop().create_task(background_job(seconds))
        background.add(task)
        task.add_done_callback(background.discard)
        await asyncio.sleep(0)  # let the job register itself before we answer
        return {"started": True, "seconds": seconds, "jobs": app.get_async_task_info()}
    if action == "cancel":
        running = list(background)
        for task in running:
            task.cancel()
        await asyncio.gather(*running, return_exceptions=True)  # each job unregisters itself as it ends
        return {"cancelled": len(running), "jobs": app.get_async_task_info()}
    return {"jobs": app.get_async_task_info(), "ping": app.get_current_ping_status().value}


if __name__ == "__main__":
    app.run(port=int(os.environ.get("PORT", "8080")))
