"""Cluster: a gateway (``hangar serve --cluster``) and a remote ``hangar node`` against one ``hangar serve``.

Side by side on one throwaway PostgreSQL (a database each), in the loopback-only network namespace of a Ray head
(tests/support/ray_cluster.py; the suite's own thread moves into it while it runs and back after):

- **new sessions/s**: 8 clients, each in a loop: invoke a new session id, stop it (StopRuntimeSession);
- **warm invoke**: 1 client, one session, sequential invokes of a tiny payload: p50/p99 of the whole answer; for
  the cluster also straight to the node's API (signed with the cluster key, as a gateway does);
- **database per session start, warm invoke and stop**: every statement PostgreSQL ran meanwhile
  (``log_min_duration_statement=0``, grouped by ``application_name``: gateway, node, single process), less what
  the same connections run idle, with the server time it logged;
- **placement table**: ``session_placements`` size and bytes per row with those sessions live, and what a
  gateway's look at every binding (``placements.all_placements``) costs at 1k-100k synthetic rows;
- **describe fan-out**: what one read of the node directory costs (list the ``node:*`` actors, ``describe()``
  each: ``placement._read_actors``, cached ~1 s by every gateway) with the real node alone and with extra
  NodeAgent actors of capacity 0 (never chosen), and one actor call's round trip.

The single process runs on PostgreSQL too, so the comparison is the topology (gateway -> node hop, placement),
not SQLite against PostgreSQL. docs/deploy.md turns these numbers into 10, 100 and 1,000 nodes.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import statistics
import tempfile
import threading
import time
from collections import Counter, defaultdict
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx

from bench.context import AGENTS, BenchContext
from bench.hangar_instance import HangarInstance, new_session_id
from bench.stats import ratio, summarize_ms

PAYLOAD = b'{"prompt": "hello"}'
CLIENTS = 8
NODE_SLOTS = 64
APPS = {"gateway": "hangar-gateway", "node": "hangar-node", "single": "hangar-single"}
DURATION = re.compile(
    r"^(?P<app>[^|]*)\|LOG:  duration: (?P<ms>[0-9.]+) ms  (?P<kind>statement|execute|parse|bind)[^:]*: (?P<sql>.*)$"
)
ROLES = {"single": ("single",), "cluster": ("gateway", "node")}


def unavailable() -> str | None:
    from tests.support.postgres import unavailable_reason as postgres_missing
    from tests.support.ray_cluster import unavailable_reason as ray_missing

    return ray_missing() or postgres_missing()


def run(ctx: BenchContext) -> dict[str, object]:
    reason = unavailable()
    if reason is not None:
        return {"skipped": reason}
    from tests.support.postgres import PostgresCluster
    from tests.support.ray_cluster import RayCluster

    cluster = RayCluster.start()  # this thread is in the cluster's namespace from here until stop()
    try:
        postgres = PostgresCluster.start()
        try:
            with _world_readable_dir() as root:
                return _measure(ctx, cluster, postgres, root)
        finally:
            postgres.stop()
    finally:
        cluster.stop()


@contextlib.contextmanager
def _world_readable_dir() -> Iterator[Path]:
    root = Path(tempfile.mkdtemp(prefix="hangar-bench-cluster-", dir="/tmp"))
    root.chmod(0o755)  # sandbox uids traverse to their environments under the data dirs
    try:
        yield root
    finally:
        shutil.rmtree(root, ignore_errors=True)


def _with_app(url: str, role: str) -> str:
    return f"{url}?application_name={APPS[role]}"


def _measure(ctx: BenchContext, cluster: Any, postgres: Any, root: Path) -> dict[str, object]:
    cluster_db, single_db = postgres.new_database(), postgres.new_database()
    gateway = HangarInstance(
        root / "gateway", extra_args=["--cluster"], env={"HANGAR_DATABASE_URL": _with_app(cluster_db, "gateway")}
    ).start()
    single = HangarInstance(root / "single", env={"HANGAR_DATABASE_URL": _with_app(single_db, "single")})
    try:
        single.start()
        credentials = {"AWS_SHARED_CREDENTIALS_FILE": str(gateway.data_dir / "credentials")}
        node = cluster.start_node(
            root / "node",
            database_url=_with_app(cluster_db, "node"),
            gateway=gateway.url,
            name="bench-node",
            slots=NODE_SLOTS,
            env=credentials,
        )
        contestants = {"single": single, "cluster": gateway}
        arns = {name: inst.deploy(AGENTS / "echo_sdk", name="bench_cluster_echo") for name, inst in contestants.items()}
        for name, inst in contestants.items():
            _new_sessions(inst, arns[name], 1, ctx.n(5, 3))  # builds, templates, spares: not what is measured
        results: dict[str, Any] = {name: {} for name in contestants}
        sequential = ctx.n(30, 6)
        database: dict[str, Any] = {}
        for name, inst in contestants.items():
            database[name] = _database_per_session(postgres, inst, arns[name], sequential, ROLES[name], ctx.n(5, 2))
        for name, inst in contestants.items():
            results[name]["warm_invoke"] = _warm_invoke(inst, arns[name], ctx.n(400, 40))
        runtime_id = arns["cluster"].rsplit("/", 1)[1]
        results["cluster"]["warm_invoke_node_direct"] = _warm_invoke_node(node.url, runtime_id, ctx.n(400, 40))
        for name, inst in contestants.items():
            results[name]["new_sessions"] = _new_sessions(inst, arns[name], CLIENTS, ctx.n(240, 24))
        results["database"] = database
        results["describe_fanout"] = _describe_fanout(ctx.n(8, 2), ctx.n(200, 20))
        results["placement_scan"] = _placement_scan(postgres, ctx.n(100_000, 10_000))
        results["node"] = node.name
        results["load_avg_at_end"] = [round(x, 2) for x in os.getloadavg()]  # 2 shared cores: read numbers with it
        results["ratios"] = {
            "new_sessions_per_s": ratio(
                results["cluster"]["new_sessions"]["sessions_per_s"],
                results["single"]["new_sessions"]["sessions_per_s"],
            ),
            "warm_invoke_p50": ratio(
                results["cluster"]["warm_invoke"].get("p50_ms"), results["single"]["warm_invoke"].get("p50_ms")
            ),
        }
        _print(results)
        return results
    finally:
        gateway.stop()
        single.stop()


def _invoke(
    client: httpx.Client, inst: HangarInstance, arn: str, session: str, headers: dict[str, str] | None = None
) -> None:
    url = inst.invoke_url(arn)
    response = client.post(url, content=PAYLOAD, headers=headers or inst.signed_headers(url, PAYLOAD, session))
    if response.status_code != 200:
        raise RuntimeError(f"invoke failed: {response.status_code} {response.text[:300]}")


def _new_sessions(inst: HangarInstance, arn: str, clients: int, total: int) -> dict[str, Any]:
    """``clients`` threads invoke a new session id and stop it until ``total`` sessions are done."""
    lock = threading.Lock()
    remaining = [total]
    latencies: list[float] = []
    errors: list[str] = []

    def worker() -> None:
        with httpx.Client(timeout=300) as client:
            while True:
                with lock:
                    if remaining[0] <= 0 or errors:
                        return
                    remaining[0] -= 1
                session = new_session_id()
                try:
                    started = time.perf_counter()
                    _invoke(client, inst, arn, session)
                    elapsed = time.perf_counter() - started
                    inst.stop_session(client, arn, session)
                except Exception as exc:
                    with lock:
                        errors.append(f"{type(exc).__name__}: {exc}")
                    return
                with lock:
                    latencies.append(elapsed)

    threads = [threading.Thread(target=worker, name=f"bench-cluster-{i}") for i in range(clients)]
    started = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    wall = time.perf_counter() - started
    if errors:
        raise RuntimeError(f"new sessions failed: {errors[0]}")
    return {
        "clients": clients,
        "sessions": len(latencies),
        "seconds": round(wall, 3),
        "sessions_per_s": round(len(latencies) / wall, 2),
        "invoke_new_id": summarize_ms(latencies),
    }


def _warm_invoke(inst: HangarInstance, arn: str, count: int) -> dict[str, Any]:
    """One client, one session: ``count`` sequential invokes (signed once: a signature is valid ~5 minutes)."""
    session = new_session_id()
    url = inst.invoke_url(arn)
    samples = []
    with httpx.Client(timeout=60) as client:
        _invoke(client, inst, arn, session)
        headers = inst.signed_headers(url, PAYLOAD, session)
        for i in range(count):
            if i and i % 200 == 0:
                headers = inst.signed_headers(url, PAYLOAD, session)
            started = time.perf_counter()
            _invoke(client, inst, arn, session, headers)
            samples.append(time.perf_counter() - started)
        inst.stop_session(client, arn, session)
    return summarize_ms(samples)


def _warm_invoke_node(node_url: str, runtime_id: str, count: int) -> dict[str, Any]:
    """The same warm invoke sent straight to the node's API (signed with the cluster key, as a gateway does): what
    the node costs without the gateway in front."""
    from hangar.cluster import node_auth, ray_link
    from hangar.cluster.node_versions import encode_target

    ray_link.connect()
    key = ray_link.cluster_key()
    session = new_session_id()
    path = f"/node/v1/sessions/{runtime_id}/{session}"
    headers = {
        "X-Hangar-Target": encode_target(runtime_id, "DEFAULT", 1),
        "X-Hangar-Agent-Method": "POST",
        "X-Hangar-Agent-Path": "/invocations",
        "X-Hangar-H-Content-Type": "application/json",
        "X-Hangar-H-X-Amzn-Bedrock-AgentCore-Runtime-Session-Id": session,
    }
    samples = []
    with httpx.Client(base_url=node_url, timeout=60) as client:
        for i in range(count + 1):
            signed = {**headers, node_auth.HEADER: node_auth.sign(key, "POST", f"{path}/request")}
            started = time.perf_counter()
            response = client.post(f"{path}/request", content=PAYLOAD, headers=signed)
            elapsed = time.perf_counter() - started
            if response.status_code != 200:
                raise RuntimeError(f"node invoke failed: {response.status_code} {response.text[:300]}")
            if i:  # the first one starts the session
                samples.append(elapsed)
        client.delete(path, headers={node_auth.HEADER: node_auth.sign(key, "DELETE", path)})
    return summarize_ms(samples)


def _pg(postgres: Any, sql: str, database: str = "postgres") -> list[tuple[Any, ...]]:
    import psycopg

    dsn = f"host=127.0.0.1 port={postgres.port} user=postgres dbname={database}"
    with psycopg.connect(dsn, autocommit=True) as conn, conn.cursor() as cursor:
        cursor.execute(sql)  # the suite's own constant statements
        return list(cursor.fetchall()) if cursor.description else []


@contextlib.contextmanager
def _statement_log(postgres: Any) -> Iterator[dict[str, Any]]:
    """Every statement PostgreSQL runs inside the block, logged with its duration; summarized per application."""
    log = postgres.data_dir / "server.log"
    _pg(postgres, "ALTER SYSTEM SET log_line_prefix = '%a|'")
    _pg(postgres, "ALTER SYSTEM SET log_min_duration_statement = 0")
    _pg(postgres, "SELECT pg_reload_conf()")
    time.sleep(0.5)  # every backend reloads its settings at its next statement
    offset = log.stat().st_size
    found: dict[str, Any] = {}
    started = time.monotonic()
    try:
        yield found
    finally:
        seconds = time.monotonic() - started
        time.sleep(0.5)
        _pg(postgres, "ALTER SYSTEM RESET log_min_duration_statement")
        _pg(postgres, "SELECT pg_reload_conf()")
        with log.open("rb") as handle:
            handle.seek(offset)
            found.update(_summarize_log(handle.read().decode(errors="replace")))
        found["seconds"] = seconds


def _summarize_log(text: str) -> dict[str, Any]:
    """Per application: statements (simple queries and executes), the server time of all its steps, by verb."""
    statements: Counter[str] = Counter()
    server_ms: defaultdict[str, float] = defaultdict(float)
    verbs: defaultdict[str, Counter[str]] = defaultdict(Counter)
    for line in text.splitlines():
        match = DURATION.match(line)
        if match is None or match["app"] not in APPS.values():
            continue
        app = match["app"]
        server_ms[app] += float(match["ms"])
        if match["kind"] in ("statement", "execute"):
            statements[app] += 1
            verbs[app][match["sql"].strip().split(" ", 1)[0].upper()] += 1
    return {
        app: {"statements": statements[app], "server_ms": round(server_ms[app], 3), "verbs": dict(verbs[app])}
        for app in statements
    }


def _database_per_session(
    postgres: Any, inst: HangarInstance, arn: str, count: int, roles: tuple[str, ...], idle_s: float
) -> dict[str, Any]:
    """Sessions started one after another, one of them invoked again ``count`` times, then all stopped: statements
    per start, per warm invoke and per stop of ``roles``' own connections, less what the same connections run idle
    (measured first, for ``idle_s``: lifecycle ticks, session records) over the same time."""
    sessions = [new_session_id() for _ in range(count)]
    with _statement_log(postgres) as idle:
        time.sleep(idle_s)
    with httpx.Client(timeout=300) as client:
        with _statement_log(postgres) as starts:
            for session in sessions:
                _invoke(client, inst, arn, session)
        placements = _placement_table(postgres, inst)
        headers = inst.signed_headers(inst.invoke_url(arn), PAYLOAD, sessions[0])
        with _statement_log(postgres) as warm:
            for _ in range(count):
                _invoke(client, inst, arn, sessions[0], headers)
        with _statement_log(postgres) as stops:
            for session in sessions:
                inst.stop_session(client, arn, session)
    out: dict[str, Any] = {"sessions": count, "placements": placements, "idle_statements_per_s": {}}
    for role in roles:
        idle_rate = idle.get(APPS[role], {}).get("statements", 0) / idle["seconds"]
        out["idle_statements_per_s"][role] = round(idle_rate, 2)
        for phase, logged in (("per_start", starts), ("per_warm_invoke", warm), ("per_stop", stops)):
            mine = logged.get(APPS[role], {"statements": 0, "server_ms": 0.0, "verbs": {}})
            background = idle_rate * logged["seconds"]
            out.setdefault(phase, {})[role] = {
                "statements": round(max(0.0, mine["statements"] - background) / count, 2),
                "server_ms": round(mine["server_ms"] / count, 3),
                "verbs": {verb: round(n / count, 2) for verb, n in sorted(mine["verbs"].items())},
            }
    return out


def _placement_table(postgres: Any, inst: HangarInstance) -> dict[str, Any]:
    """``session_placements`` while the sessions are live (only the cluster's database has rows)."""
    database = inst.env["HANGAR_DATABASE_URL"].rsplit("/", 1)[1].split("?", 1)[0]
    rows = _pg(
        postgres,
        "SELECT count(*), pg_relation_size('session_placements'), pg_indexes_size('session_placements'), "
        "coalesce(avg(pg_column_size(p.*)), 0) FROM session_placements p",
        database,
    )
    [(count, heap, indexes, row)] = rows
    return {"rows": count, "heap_bytes": heap, "index_bytes": indexes, "avg_row_bytes": round(float(row), 1)}


def _placement_scan(postgres: Any, largest: int) -> dict[str, Any]:
    """What one gateway's look at every binding costs (``placements.all_placements``, which its watch runs every
    ``remote.WATCH_S``) with 1,000 up to ``largest`` synthetic rows in a scratch database of the real schema."""
    from sqlalchemy import text

    from hangar.store import placements
    from hangar.store.engine import create_store_engine, migrate

    engine = create_store_engine(postgres.new_database())
    migrate(engine)
    out: dict[str, Any] = {}
    try:
        rows = 1_000
        while rows <= largest:
            with engine.begin() as conn:
                conn.execute(text("DELETE FROM session_placements"))
                conn.execute(
                    text(
                        "INSERT INTO session_placements (runtime_id, session_id, node, created_at) "
                        "SELECT 'bench_cluster_echo-0123456789', 'bench-' || md5(i::text) || '-' || i, "
                        "'node-' || (i % 100), now() FROM generate_series(1, :n) AS i"
                    ),
                    {"n": rows},
                )
                conn.execute(text("ANALYZE session_placements"))
            samples = []
            for _ in range(3):
                started = time.perf_counter()
                with engine.connect() as conn:
                    found = placements.all_placements(conn)
                samples.append(time.perf_counter() - started)
            with engine.connect() as conn:
                size: int = conn.execute(text("SELECT pg_total_relation_size('session_placements')")).scalar_one()
            out[str(rows)] = {
                "read_ms_p50": round(statistics.median(samples) * 1000, 1),
                "rows": len(found),
                "table_and_indexes_bytes": size,
                "bytes_per_row": round(size / rows, 1),
            }
            rows *= 10
    finally:
        engine.dispose()
    return out


def _describe_fanout(extra_nodes: int, reps: int) -> dict[str, Any]:
    """One directory read (``placement._read_actors``) with the real node alone and with ``extra_nodes`` more
    NodeAgent actors of capacity 0; and the round trip of one ``describe()`` call."""
    import ray

    from hangar.cluster import node_actor, placement, ray_link

    ray_link.connect()

    def timed(fn: Any) -> list[float]:
        samples = []
        for _ in range(reps):
            started = time.perf_counter()
            fn()
            samples.append(time.perf_counter() - started)
        return samples

    [real] = [a["name"] for a in ray.util.list_named_actors(all_namespaces=True) if placement._is_node(a)]
    handle = ray.get_actor(real, namespace=ray_link.NAMESPACE)
    call = summarize_ms(timed(lambda: ray.get(handle.describe.remote())))
    alone = summarize_ms(timed(placement._read_actors))
    remote_class: Any = ray.remote(node_actor.NodeAgent)
    fakes = [
        remote_class.options(
            name=node_actor.actor_name(f"bench-fake-{i}"), namespace=ray_link.NAMESPACE, num_cpus=0
        ).remote(f"bench-fake-{i}", "http://127.0.0.1:9", 0)
        for i in range(extra_nodes)
    ]
    try:
        ray.get([fake.describe.remote() for fake in fakes], timeout=120)
        crowd = summarize_ms(timed(placement._read_actors))
    finally:
        for fake in fakes:
            ray.kill(fake)
    per_node = (crowd["p50_ms"] - alone["p50_ms"]) / extra_nodes if extra_nodes else None
    return {
        "describe_call": call,
        "read_1_node": alone,
        f"read_{extra_nodes + 1}_nodes": crowd,
        "per_extra_node_p50_ms": None if per_node is None else round(per_node, 3),
    }


def _print(results: dict[str, Any]) -> None:
    single, cluster = results["single"], results["cluster"]
    print(f"{'cluster suite':<40} {'single process':>16} {'gateway + node':>16} {'ratio':>8}")
    for label, key, field in (
        ("new sessions/s (8 clients)", "new_sessions", "sessions_per_s"),
        ("invoke a new id p50 ms (8 clients)", "new_sessions", "invoke_new_id"),
        ("warm invoke p50 ms (1 client)", "warm_invoke", "p50_ms"),
        ("warm invoke p99 ms (1 client)", "warm_invoke", "p99_ms"),
    ):
        a, b = single[key][field], cluster[key][field]
        if isinstance(a, dict):
            a, b = a.get("p50_ms"), b.get("p50_ms")
        print(f"{label:<40} {a:>16} {b:>16} {ratio(b, a) or '-':>8}")
    direct = cluster["warm_invoke_node_direct"]
    print(f"{'warm invoke p50 ms, straight to the node':<40} {'':>16} {direct.get('p50_ms'):>16}")
    for name in ("single", "cluster"):
        for phase in ("per_start", "per_warm_invoke", "per_stop"):
            for role, numbers in results["database"][name][phase].items():
                print(
                    f"db {phase.replace('_', ' ')}, {role:<8} {numbers['statements']:>6} statements, {numbers['verbs']}"
                )
    print(f"placements: {results['database']['cluster']['placements']}")
    print(f"describe fan-out: {results['describe_fanout']}")


def headline_rows(results: dict[str, Any]) -> list[tuple[str, str, str, str, str]]:
    """Rows for bench/report.py's table: the cluster beside the single process."""
    if not isinstance(results.get("cluster"), dict) or not isinstance(results.get("single"), dict):
        return []
    single, cluster = results["single"], results["cluster"]
    ratios = results.get("ratios", {})
    warm_single, warm_cluster = single["warm_invoke"], cluster["warm_invoke"]
    starts = results.get("database", {}).get("cluster", {}).get("per_start", {})
    statements = sum(role["statements"] for role in starts.values())
    return [
        (
            f"cluster: new sessions/s ({CLIENTS} clients), gateway + remote node",
            f"{cluster['new_sessions']['sessions_per_s']}/s",
            f"{single['new_sessions']['sessions_per_s']}/s",
            "single hangar serve (PostgreSQL)",
            f"{ratios.get('new_sessions_per_s')}x; {statements:.0f} SQL statements per start",
        ),
        (
            "cluster: warm invoke p50 (p99), 1 client, gateway + remote node",
            f"{warm_cluster.get('p50_ms')} ms ({warm_cluster.get('p99_ms')} ms)",
            f"{warm_single.get('p50_ms')} ms ({warm_single.get('p99_ms')} ms)",
            "single hangar serve (PostgreSQL)",
            f"{ratios.get('warm_invoke_p50')}x",
        ),
    ]
