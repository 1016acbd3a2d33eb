"""New-session start of the same Python agent deployed as code (cold and forked from its warm template) and as a
container image (cold: image sessions do not fork yet); prints medians, asserts nothing.

Run as root from the repo: ``.venv/bin/python -m bench.image_sessions [N]``. The agent is the sandbox tests' one
(``tests/sandbox/agent_app.py``: starlette + uvicorn); the image is Debian's python3 with the same two packages
copied from the test agent environment, as ``tests/support/agents/image_rootfs.py`` builds it (what the unpacked
rootfs of such an image holds). Start is measured from ``start()``/``fork()`` to the first 200 on /ping through
the sandbox's socket, at the namespace backend, with Hangar's default limits.
"""

from __future__ import annotations

import asyncio
import dataclasses
import shutil
import statistics
import sys
import time
import uuid
from pathlib import Path

from tests.sandbox.fixtures import AgentFiles, make_backend, prepared_agent_files, wait_ping, world_readable_dir
from tests.support.agents.image_rootfs import python_rootfs

from hangar.sandbox.base import Limits, Sandbox, SandboxSpec
from hangar.sandbox.selection import namespace_unsupported_reason

LIMITS = Limits(memory_bytes=2048 << 20, cpus=1.0, pids=256, disk_bytes=512 << 20)


def image_spec(rootfs: Path) -> SandboxSpec:
    return SandboxSpec(
        sandbox_id=f"bi-{uuid.uuid4().hex[:12]}",
        code_dir=rootfs,
        env_dir=rootfs,
        command=("python3", "/app/main.py"),
        agent_port=8080,
        limits=LIMITS,
        rootfs=rootfs,
        workdir="/app",
        network="none",
    )


def build_image(files: AgentFiles, base: Path) -> Path:
    site = next((files.env_dir / "lib").glob("python3*/site-packages"))
    wanted = {"starlette", "uvicorn", "anyio", "sniffio", "idna", "h11", "click", "typing_extensions.py"}
    packages = [p for p in site.iterdir() if p.name.split("-")[0].lower() in wanted]
    rootfs = python_rootfs(base / "rootfs", packages)
    shutil.copy(files.code_dir / "main.py", rootfs / "app" / "main.py")
    (rootfs / "app" / "main.py").chmod(0o644)
    return rootfs


async def timed(start: object) -> tuple[float, Sandbox]:
    began = time.perf_counter()
    sandbox = await start  # type: ignore[misc]
    await wait_ping(sandbox)
    return time.perf_counter() - began, sandbox


async def main(count: int) -> None:
    reason = namespace_unsupported_reason()
    if reason is not None:
        raise SystemExit(f"the namespace backend is not available here: {reason}")
    root = world_readable_dir("hangar-bench-images-")
    files_iter = prepared_agent_files()
    files = next(files_iter)
    backend = make_backend("namespace", root / "state", egress="deny")
    try:
        rootfs = build_image(files, root)
        code = dataclasses.replace(files.spec(limits=LIMITS), command=(str(files.env_dir / "bin/python"), "main.py"))
        template = await backend.start_template(dataclasses.replace(code, sandbox_id=f"bt-{uuid.uuid4().hex[:12]}"))
        results: dict[str, list[float]] = {"code cold": [], "code fork": [], "image cold": []}

        def fresh(prefix: str) -> SandboxSpec:
            return dataclasses.replace(code, sandbox_id=f"{prefix}-{uuid.uuid4().hex[:12]}")

        for _ in range(count):
            for name, make in (
                ("code cold", lambda: backend.start(fresh("bc"))),
                ("code fork", lambda: backend.fork(template, fresh("bf"))),
                ("image cold", lambda: backend.start(image_spec(rootfs))),
            ):
                seconds, sandbox = await timed(make())
                results[name].append(seconds)
                await sandbox.stop()
                await asyncio.sleep(0.2)  # let the next fork be prepared beside, as on a real server
        await template.stop()
        base = statistics.median(results["code cold"])
        for name, values in results.items():
            median = statistics.median(values)
            print(f"{name:11s} median {median * 1000:7.1f} ms  (x{median / base:4.2f} of code cold, n={len(values)})")
    finally:
        await backend.cleanup_orphans()
        shutil.rmtree(root, ignore_errors=True)
        for _ in files_iter:
            pass


if __name__ == "__main__":
    asyncio.run(main(int(sys.argv[1]) if len(sys.argv) > 1 else 10))
