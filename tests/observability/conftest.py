"""The session-log modules' shared ``logged`` fixture: a real ``hangar serve`` with the ``logger`` agent deployed
and one session that has printed to stdout and stderr, its log stream found and its stderr line stored.

Each module says what its server is with a module-level ``LOGGED = LoggedSetup(...)`` (prefix, env, the lines the
first call prints): the modules differ in backend and log budget, and one of them restarts its server, so each has
its own (module scope), while what is set up and waited for is written once here.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.dataplane.support import deploy, new_session_id, seeded_server, wait_for
from tests.observability.logged import Logged, LoggedSetup

LOGGED_WAIT_S = 120.0


@pytest.fixture(scope="module")
def logged(request: pytest.FixtureRequest) -> Iterator[Logged]:
    setup: LoggedSetup = request.module.LOGGED
    reason = setup.missing() if setup.missing else None
    if reason:
        pytest.skip(reason)
    with seeded_server(setup.prefix, ("logger",), env=setup.env) as server:
        runtime = deploy(server.boto3_client("bedrock-agentcore-control"), "logger")
        group = f"/aws/bedrock-agentcore/runtimes/{runtime['agentRuntimeId']}-DEFAULT"
        seen = Logged(server, runtime, group, new_session_id(), "")
        seen.invoke({"out": list(setup.out), "err": [setup.err]})
        seen.stream = wait_for(lambda: seen.stream_of(seen.session_id), timeout=LOGGED_WAIT_S)
        wait_for(lambda: setup.err in seen.messages(), timeout=LOGGED_WAIT_S)
        yield seen
