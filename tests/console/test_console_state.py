"""Console sign-in state on its own clock: idle and absolute expiry, and the login rate limit's sliding window."""

from __future__ import annotations

from hangar.console.auth import ABSOLUTE_S, IDLE_S, LOGIN_FAILURES, LOGIN_WINDOW_S, ConsoleState
from hangar.domain.types import Principal

WHO = Principal(kind="sigv4", account_id="123456789012", name="admin", access_key_id="AKIATESTKEY000000001")


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_a_session_ends_after_idling_and_after_its_absolute_lifetime() -> None:
    clock = Clock()
    state = ConsoleState(clock=clock)
    idle = state.open(WHO)
    clock.now += IDLE_S - 1
    assert state.get(idle) is not None  # a request just in time renews it
    clock.now += IDLE_S + 1
    assert state.get(idle) is None

    busy = state.open(WHO)
    opened = clock.now
    while state.get(busy) is not None:  # used every half idle period: only the absolute lifetime ends it
        clock.now += IDLE_S / 2
    assert ABSOLUTE_S < clock.now - opened <= ABSOLUTE_S + IDLE_S / 2


def test_ids_are_fresh_and_closed_ones_are_gone() -> None:
    state = ConsoleState()
    first, second = state.open(WHO), state.open(WHO)
    assert first != second and len(first) >= 40
    assert state.get(first) is not None and state.get(first) is not state.get(second)
    assert state.get(first).csrf != state.get(second).csrf  # type: ignore[union-attr]
    state.close(first)
    assert state.get(first) is None and state.get(second) is not None
    assert state.get("") is None and state.get(None) is None


def test_the_login_limit_slides_with_the_window() -> None:
    clock = Clock()
    state = ConsoleState(clock=clock)
    for _ in range(LOGIN_FAILURES):
        assert not state.limited("127.0.0.1", "AKIAGUESS")
        state.failed("127.0.0.1", "AKIAGUESS")
    assert state.limited("127.0.0.1", "AKIAGUESS")
    assert not state.limited("127.0.0.1", "AKIAOTHER")
    clock.now += LOGIN_WINDOW_S + 1
    assert not state.limited("127.0.0.1", "AKIAGUESS")
