"""`python -m bench [--smoke] [--only SUITE ...] [--out DIR]`: every comparison in one process tree, one run."""

from __future__ import annotations

import argparse
import importlib
import os
import tempfile
import traceback
from pathlib import Path

from bench import machine, report
from bench.context import BenchContext, server_env
from bench.hangar_instance import HangarInstance

SUITES = (
    *("profile_start", "new_session", "warm_invoke", "peer_langgraph", "streaming", "payloads", "density", "soak"),
    "image_session",
    "examples",
    "server_shapes",
    "peers",
    "cluster",  # a gateway and a remote node (Ray) beside the single process: docs/deploy.md
)


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m bench")
    parser.add_argument("--smoke", action="store_true", help="a few iterations of everything, no thresholds")
    parser.add_argument("--only", nargs="*", choices=SUITES, help="run only these suites")
    parser.add_argument("--server-arg", action="append", default=[], help="extra flag for hangar serve")
    parser.add_argument("--out", type=Path, default=report.RESULTS, help="where results go (default bench/results)")
    parser.add_argument("--soak-seconds", type=float, help="length of the soak (default 1800, or 60 with --smoke)")
    args = parser.parse_args()
    results: dict[str, object] = {}
    failed = False
    load_at_start = os.getloadavg()
    measured = machine.source()  # at the start: the code the server imports
    with tempfile.TemporaryDirectory(prefix="hangar-bench-", dir="/tmp") as tmp:
        Path(tmp).chmod(0o755)  # sandbox uids must traverse to the environments under the data dir
        hangar = HangarInstance(Path(tmp) / "data", extra_args=args.server_arg, env=server_env()).start()
        ctx = BenchContext(hangar=hangar, smoke=args.smoke, soak_seconds=args.soak_seconds)
        try:
            for name in args.only or SUITES:
                print(f"== {name}", flush=True)
                try:
                    results[name] = importlib.import_module(f"bench.suites.{name}").run(ctx)
                except Exception as exc:
                    failed = True
                    traceback.print_exc()
                    results[name] = {"error": f"{type(exc).__name__}: {exc}"}
        finally:
            hangar.stop()
    report.print_table(results)
    described = machine.describe()
    described["load_avg_at_start"] = load_at_start
    described["mode"] = "smoke" if args.smoke else "full"
    described["source"] = measured
    # a smoke run (CI) never overwrites the published results of a full run
    print(f"wrote {report.write(results, described, 'smoke' if args.smoke else 'latest', args.out)}")
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
