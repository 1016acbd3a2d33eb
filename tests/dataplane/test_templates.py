"""Warm templates end to end: a real ``hangar serve`` with real (namespace) sandboxes, driven through boto3 and seen
through the operator API (``GET /hangar/sessions/``: each session's ``startKind`` and ``coldReason``, and the
``templates`` object per served version).

What is proven: new sessions of a served version fork from its template and behave like cold ones (right answers,
state kept within a session and not across sessions), the real bedrock-agentcore SDK forks too; ``--no-templates``
and ``HANGAR_TEMPLATE=off`` start cold (the opt-out says why); an agent with a thread at import is reported unsafe
once and never retried; a killed zygote leaves its forked sessions running and is restarted; an update gets the new
version a template and retires the old one while its sessions carry on; warm-pool refills are forked; and a stopped
server leaves no template process or cgroup behind.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from hangar.sandbox.namespace.cgroups import detect, list_names
from hangar.sandbox.state import instance_tag
from tests.dataplane.support import ROLE, deploy, new_session_id, operator, seeded_server, wait_for
from tests.support.server import HangarServer

AGENTS = ("testbed", "realsdk", "threaded", "openfile")
SETTLE_S = 3.0  # several template reconcile passes (1 s each): long enough to see a retry loop if there were one


@pytest.fixture(scope="module")
def server() -> Iterator[HangarServer]:
    # No cold spares (on by default, tests/sessions/test_cold_spares.py): the unsafe agent's sessions start cold here.
    with seeded_server("hangar-templates-", AGENTS, env={"HANGAR_COLD_SPARES": "false"}) as hangar:
        if not operator(hangar)["templates"]["enabled"]:
            pytest.skip(f"warm templates need the namespace backend, this host has {operator(hangar)['backend']}")
        yield hangar
        hangar.stop()
        assert _leftovers(instance_tag(hangar.data_dir)) == []


@pytest.fixture(scope="module")
def control(server: HangarServer) -> Any:
    return server.boto3_client("bedrock-agentcore-control")


@pytest.fixture(scope="module")
def data(server: HangarServer) -> Any:
    return server.boto3_client("bedrock-agentcore")


# --- reading the operator API


def _key(runtime: dict[str, Any], version: str | None = None) -> str:
    return f"{runtime['agentRuntimeId']}/{version or runtime['agentRuntimeVersion']}"


def _version(server: HangarServer, key: str) -> dict[str, Any] | None:
    return operator(server)["templates"]["versions"].get(key)


def _live_template(server: HangarServer, key: str, timeout: float = 180.0) -> dict[str, Any]:
    """The version's template once it is ready (bounded wait)."""

    def ready() -> dict[str, Any] | None:
        state = _version(server, key)
        if state is not None and state["unsafeReason"] is not None:
            raise AssertionError(f"the template of {key} is unusable: {state['unsafeReason']}")
        template = state and state["template"]
        return template if template and template["alive"] else None

    return wait_for(ready, timeout=timeout)


def _session(server: HangarServer, session_id: str) -> dict[str, Any]:
    return next(s for s in operator(server)["sessions"] if s["runtimeSessionId"] == session_id)


def _invoke(data: Any, runtime: dict[str, Any], session_id: str, payload: dict[str, Any]) -> dict[str, Any]:
    response = data.invoke_agent_runtime(
        agentRuntimeArn=runtime["agentRuntimeArn"], runtimeSessionId=session_id, payload=json.dumps(payload)
    )
    return json.loads(response["response"].read())


def _stop(data: Any, runtime: dict[str, Any], *session_ids: str) -> None:
    for session_id in session_ids:
        data.stop_runtime_session(agentRuntimeArn=runtime["agentRuntimeArn"], runtimeSessionId=session_id)


# --- reading the host


def _uid_of(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("Uid:"):
            return int(line.split()[1])
    raise AssertionError(f"no Uid line for pid {pid}")


def _processes_of_uid(uid: int, tag: str) -> list[str]:
    """Processes running as ``uid``, except those in another installation's cgroups (uids are leased host-wide,
    so a concurrently running server may lease a uid this one has just released)."""
    found = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            if _uid_of(int(proc.name)) != uid:
                continue
            cgroup = (proc / "cgroup").read_text(errors="replace")
            cmdline = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except (OSError, AssertionError):
            continue
        if "hangar-" in cgroup and f"hangar-{tag}-" not in cgroup:
            continue
        found.append(f"{proc.name}: {cmdline.strip()} [{cgroup.strip()}]")
    return found


def _cgroups(prefix: str) -> list[str]:
    layout = detect()
    assert layout is not None, "the namespace backend runs with cgroups"
    return list_names(layout, prefix)


def _prepared_forks(zygote_pid: int) -> set[str]:
    """Cgroups of the template's prepared forks: a session's pid 1, isolated ahead of a request and waiting for
    ``start`` in its session cgroup. Its parent is the template's pid 1 (its first process handed over and exited),
    and it has no children yet (a started session's pid 1 has its supervisor)."""
    holder = _ppid_of(Path(f"/proc/{zygote_pid}"))
    found = set()
    for proc in Path("/proc").iterdir():
        try:
            if not proc.name.isdigit() or _ppid_of(proc) != holder or int(proc.name) == zygote_pid:
                continue
            if (proc / "task" / proc.name / "children").read_text().split():
                continue
            cgroup = (proc / "cgroup").read_text()
        except OSError:
            continue
        found.update(part for line in cgroup.splitlines() for part in line.split("/") if "-hs-" in part)
    return found


def _ppid_of(proc: Path) -> int:
    for line in (proc / "status").read_text().splitlines():
        if line.startswith("PPid:"):
            return int(line.split()[1])
    return 0


def _leftovers(tag: str) -> list[str]:
    """Whatever an installation's sandboxes and templates own on the host: cgroups, uid leases, state dirs."""
    found = _cgroups(f"hangar-{tag}-")
    leases = Path("/run/hangar/uids")
    if leases.is_dir():
        for lease in leases.iterdir():
            with contextlib.suppress(OSError):
                if lease.read_text().startswith(f"{tag}/"):
                    found.append(f"uid lease {lease.name}: {lease.read_text()}")
    states = Path("/run/hangar") / tag
    if states.is_dir():
        found += [f"state dir {p}" for p in states.iterdir() if p.name.startswith(("hs-", "ht-"))]
    return found


# --- templates on (the default)


def test_new_sessions_fork_from_the_served_versions_template(server: HangarServer, control: Any, data: Any) -> None:
    runtime = deploy(control, "testbed")
    key = _key(runtime)
    before = _live_template(server, key)["forks"]
    first, second = new_session_id(), new_session_id()
    for turn in (1, 2, 3):
        answer = _invoke(data, runtime, first, {"action": "count"})
        assert answer["count"] == turn and answer["session"] == first
    secret = f"secret-{uuid.uuid4().hex}"
    assert _invoke(data, runtime, first, {"action": "write", "name": "note.txt", "text": secret}) == {
        "written": "note.txt"
    }
    assert _invoke(data, runtime, first, {"action": "read", "name": "note.txt"})["text"] == secret
    answer = _invoke(data, runtime, second, {"action": "count"})
    assert answer["count"] == 1 and answer["session"] == second  # the template's memory, not the first session's
    assert _invoke(data, runtime, second, {"action": "read", "name": "note.txt"})["text"] is None
    one, two = _session(server, first), _session(server, second)
    assert (one["startKind"], one["coldReason"]) == (two["startKind"], two["coldReason"]) == ("fork", None)
    assert one["sandboxId"] != two["sandboxId"]
    assert one["memoryBytes"] > 0 and two["memoryBytes"] > 0  # a forked session's own cgroup, measured
    state = _version(server, key)
    assert state is not None and state["template"]["forks"] == before + 2
    assert state["restarts"] == 0 and state["unsafeReason"] is None and state["lastFailure"] is None
    assert operator(server)["warmPool"]["sessionsStarted"].get("fork", 0) >= 2
    _stop(data, runtime, first, second)
    tag = instance_tag(server.data_dir)
    wait_for(lambda: not any(_cgroups(f"hangar-{tag}-{s['sandboxId']}") for s in (one, two)), timeout=60)


def test_the_real_bedrock_agentcore_sdk_agent_forks(server: HangarServer, control: Any, data: Any) -> None:
    runtime = deploy(control, "realsdk")
    _live_template(server, _key(runtime))
    first, second = new_session_id(), new_session_id()
    for turn, prompt in enumerate(("hello", "again"), start=1):
        body = _invoke(data, runtime, first, {"prompt": prompt})
        assert body["sdk"] == "bedrock-agentcore" and body["session"] == first and len(body["turns"]) == turn
    assert _invoke(data, runtime, second, {"prompt": "other"})["turns"] == ["other"]
    streamed = data.invoke_agent_runtime(
        agentRuntimeArn=runtime["agentRuntimeArn"],
        runtimeSessionId=first,
        payload=json.dumps({"prompt": "a b c", "stream": True}),
    )
    lines = [json.loads(x.removeprefix(b"data: ")) for x in streamed["response"].iter_lines() if x]
    assert lines == [{"word": "a"}, {"word": "b"}, {"word": "c"}]
    assert _session(server, first)["startKind"] == _session(server, second)["startKind"] == "fork"
    _stop(data, runtime, first, second)


def test_a_runtime_that_opts_out_starts_cold_and_says_why(server: HangarServer, control: Any, data: Any) -> None:
    runtime = deploy(control, "testbed", environmentVariables={"HANGAR_TEMPLATE": "off"})
    session_id = new_session_id()
    assert _invoke(data, runtime, session_id, {"action": "count"})["count"] == 1
    session = _session(server, session_id)
    assert session["startKind"] == "cold"
    assert "opts out" in session["coldReason"] and "HANGAR_TEMPLATE=off" in session["coldReason"]
    time.sleep(SETTLE_S)  # a served version is picked up within a reconcile pass: give it several
    assert _version(server, _key(runtime)) is None  # no template was ever started for it
    _stop(data, runtime, session_id)


def test_an_agent_with_a_thread_at_import_is_unsafe_and_never_retried(
    server: HangarServer, control: Any, data: Any
) -> None:
    runtime = deploy(control, "threaded")
    key = _key(runtime)
    state = wait_for(lambda: (s := _version(server, key)) and s["unsafeReason"] and s, timeout=180)
    reason = state["unsafeReason"]
    assert "threads" in reason and "heartbeat" in reason, reason
    session_id = new_session_id()
    answer = _invoke(data, runtime, session_id, {})
    assert "heartbeat" in answer["threads"]  # a cold start keeps the agent's thread
    session = _session(server, session_id)
    assert session["startKind"] == "cold" and session["coldReason"] == reason
    time.sleep(SETTLE_S)
    state = _version(server, key)
    assert state is not None
    assert state["restarts"] == 0 and state["starting"] is False and state["template"] is None
    assert state["unsafeReason"] == reason
    rid = runtime["agentRuntimeId"]
    attempts = [line for line in server.log().splitlines() if f"{rid} v1" in line and "cannot be templated" in line]
    assert len(attempts) == 1, attempts  # one start, one verdict: no retry loop
    _stop(data, runtime, session_id)


def test_a_file_opened_at_import_works_in_a_session_as_in_a_cold_start(
    server: HangarServer, control: Any, data: Any
) -> None:
    runtime = deploy(control, "openfile")
    key = _key(runtime)  # settled: a live template, or (a possible fix) one that reports itself unsafe
    wait_for(lambda: (v := _version(server, key)) and ((v["template"] or {}).get("alive") or v["unsafeReason"]))
    wait_for(lambda: (_version(server, key)["template"] or {}).get("alive"))
    sessions = [new_session_id(), new_session_id()]
    for session_id in sessions:  # each fork gets its own copy of the file and its own open file on it
        assert _invoke(data, runtime, session_id, {})["log"] == ["imported", session_id]
        assert _session(server, session_id)["startKind"] == "fork", _session(server, session_id)["coldReason"]
    for session_id in sessions:
        _stop(data, runtime, session_id)


def test_a_killed_zygote_is_restarted_and_its_forked_sessions_carry_on(
    server: HangarServer, control: Any, data: Any
) -> None:
    runtime = deploy(control, "testbed")
    key = _key(runtime)
    old = _live_template(server, key)
    forked = [new_session_id(), new_session_id()]
    for session_id in forked:
        assert _invoke(data, runtime, session_id, {"action": "count"})["count"] == 1
    sandboxes = [_session(server, session_id)["sandboxId"] for session_id in forked]
    assert [_session(server, session_id)["startKind"] for session_id in forked] == ["fork", "fork"]
    prepared = wait_for(lambda: _prepared_forks(old["zygotePid"]), timeout=60)  # the next session's, made ahead
    os.kill(old["zygotePid"], signal.SIGKILL)

    def restarted() -> dict[str, Any] | None:
        state = _version(server, key)
        template = state and state["template"]
        fresh = template and template["alive"] and template["zygotePid"] != old["zygotePid"]
        return state if state and state["restarts"] >= 1 and fresh else None

    state = wait_for(restarted, timeout=180)
    assert state["template"]["id"] != old["id"] and state["unsafeReason"] is None
    wait_for(lambda: not any(_cgroups(name) for name in prepared), timeout=60)  # the dead template's is discarded
    for session_id in forked:  # same sandboxes, same memory: the zygote's death did not touch them
        assert _invoke(data, runtime, session_id, {"action": "count"})["count"] == 2
    assert [_session(server, session_id)["sandboxId"] for session_id in forked] == sandboxes
    fresh = new_session_id()
    assert _invoke(data, runtime, fresh, {"action": "count"})["count"] == 1
    assert _session(server, fresh)["startKind"] == "fork"
    assert _version(server, key)["template"]["forks"] == 1  # type: ignore[index]
    _stop(data, runtime, *forked, fresh)


def test_an_update_templates_the_new_version_and_retires_the_old(server: HangarServer, control: Any, data: Any) -> None:
    runtime = deploy(control, "testbed")
    runtime_id = runtime["agentRuntimeId"]
    v1, v2 = _key(runtime, "1"), _key(runtime, "2")
    old = _live_template(server, v1)
    pinned = new_session_id()
    assert _invoke(data, runtime, pinned, {"action": "count"})["count"] == 1
    assert _session(server, pinned)["startKind"] == "fork"
    prepared = wait_for(lambda: _prepared_forks(old["zygotePid"]), timeout=60)
    control.update_agent_runtime(
        agentRuntimeId=runtime_id,
        agentRuntimeArtifact=runtime["agentRuntimeArtifact"],
        roleArn=ROLE,
        networkConfiguration={"networkMode": "PUBLIC"},
    )
    wait_for(
        lambda: (
            control.get_agent_runtime_endpoint(agentRuntimeId=runtime_id, endpointName="DEFAULT").get("liveVersion")
            == "2"
        ),
        timeout=300,
    )
    _live_template(server, v2)
    wait_for(lambda: v1 not in operator(server)["templates"]["versions"], timeout=60)
    wait_for(lambda: not any(_cgroups(name) for name in prepared), timeout=60)  # v1's prepared fork went with it
    answer = _invoke(data, runtime, pinned, {"action": "count"})  # still on v1, in its forked sandbox
    assert answer["count"] == 2 and answer["session"] == pinned
    assert _session(server, pinned)["agentRuntimeVersion"] == "1"
    fresh = new_session_id()
    assert _invoke(data, runtime, fresh, {"action": "count"})["count"] == 1
    session = _session(server, fresh)
    assert (session["agentRuntimeVersion"], session["startKind"]) == ("2", "fork")
    # the retired template's remains (its pid 1, cgroup) stay while a session forked from it lives, then go
    tag = instance_tag(server.data_dir)
    _stop(data, runtime, pinned, fresh)
    wait_for(lambda: not _cgroups(f"hangar-{tag}-{old['id']}"), timeout=60)


# --- servers with other settings


def test_no_templates_starts_every_session_cold_without_a_reason() -> None:
    with seeded_server("hangar-no-templates-", ["testbed"], extra_args=["--no-templates"]) as server:
        assert operator(server)["templates"]["enabled"] is False
        control, data = server.boto3_client("bedrock-agentcore-control"), server.boto3_client("bedrock-agentcore")
        runtime = deploy(control, "testbed")
        first, second = new_session_id(), new_session_id()
        assert _invoke(data, runtime, first, {"action": "count"})["count"] == 1
        assert _invoke(data, runtime, first, {"action": "count"})["count"] == 2
        assert _invoke(data, runtime, second, {"action": "count"})["count"] == 1
        for session_id in (first, second):
            session = _session(server, session_id)
            assert (session["startKind"], session["coldReason"]) == ("cold", None)
        templates = operator(server)["templates"]
        assert templates["enabled"] is False and templates["versions"] == {} and templates["coldFallbacks"] == {}
        assert _cgroups(f"hangar-{instance_tag(server.data_dir)}-ht-") == []


def test_warm_pool_refills_by_forking_and_a_stopped_server_leaves_nothing() -> None:
    with seeded_server("hangar-templates-pool-", ["testbed"], extra_args=["--warm-pool", "1"]) as server:
        control, data = server.boto3_client("bedrock-agentcore-control"), server.boto3_client("bedrock-agentcore")
        runtime = deploy(control, "testbed")
        key = _key(runtime)
        template = _live_template(server, key)

        def pool() -> dict[str, Any]:
            return operator(server)["warmPool"]

        def one_spare() -> list[str] | None:
            current = pool()
            spares = current["ready"].get(key, [])
            return spares if len(spares) == 1 and current["starting"] == 0 else None

        for turn in (1, 2):
            spare = wait_for(one_spare, timeout=120)
            forks = _version(server, key)["template"]["forks"]  # type: ignore[index]
            session_id = new_session_id()
            assert _invoke(data, runtime, session_id, {"action": "count"})["count"] == 1
            session = _session(server, session_id)
            assert session["startKind"] == "warm" and session["sandboxId"] == spare[0], turn
            replaced = wait_for(lambda: (ids := one_spare()) and ids != spare and ids, timeout=120)  # noqa: B023
            assert session["sandboxId"] not in replaced
            # the replacement was forked: the template's count went up by one without a forked session
            assert _version(server, key)["template"]["forks"] == forks + 1  # type: ignore[index]
            kinds = {s["startKind"] for s in operator(server)["sessions"] if s["state"] != "Terminated"}
            assert kinds == {"warm"}
        assert pool()["sessionsStarted"] == {"warm": 2}

        # a stopped server leaves no process of the template's uid and no template cgroup
        tag = instance_tag(server.data_dir)
        uid = _uid_of(template["zygotePid"])
        assert _processes_of_uid(uid, tag), "the template's processes should be visible before the stop"
        assert _cgroups(f"hangar-{tag}-ht-"), "the template's cgroup should exist before the stop"
        server.stop()
        assert server.process is not None and server.process.returncode is not None
        assert _processes_of_uid(uid, tag) == []
        assert _cgroups(f"hangar-{tag}-ht-") == []
        assert _leftovers(tag) == []  # nor any session's, spare's or prepared fork's cgroup, uid lease or state
