"""The node API's request signature (cluster/node_auth.py): what it accepts and what it refuses."""

from __future__ import annotations

import os

import pytest

from hangar.cluster import node_auth

KEY = os.urandom(32)
PATH = "/node/v1/sessions/rt-1/s%2F1/request"


def test_a_fresh_signature_of_this_request_is_accepted() -> None:
    assert node_auth.verify(KEY, node_auth.sign(KEY, "POST", PATH, now=1000), "POST", PATH, now=1030) is None
    assert node_auth.verify(KEY, node_auth.sign(KEY, "post", PATH, now=1000), "POST", PATH, now=970) is None


@pytest.mark.parametrize(
    ("value", "method", "path", "now", "reason"),
    [
        (None, "POST", PATH, 1000, "no signature"),
        ("", "POST", PATH, 1000, "no signature"),
        ("1000", "POST", PATH, 1000, "malformed signature"),
        ("abc:" + "0" * 64, "POST", PATH, 1000, "malformed signature"),
        (node_auth.sign(KEY, "POST", PATH, now=1000), "POST", PATH, 1061, "stale signature"),
        (node_auth.sign(KEY, "POST", PATH, now=1000), "POST", PATH, 939, "stale signature"),
        (node_auth.sign(os.urandom(32), "POST", PATH, now=1000), "POST", PATH, 1000, "wrong signature"),
        (node_auth.sign(KEY, "POST", PATH, now=1000), "DELETE", PATH, 1000, "wrong signature"),
        (
            node_auth.sign(KEY, "POST", PATH, now=1000),
            "POST",
            "/node/v1/sessions/rt-1/s/1/request",
            1000,
            "wrong signature",
        ),
    ],
)
def test_anything_else_is_refused_with_its_reason(
    value: str | None, method: str, path: str, now: float, reason: str
) -> None:
    assert node_auth.verify(KEY, value, method, path, now=now) == reason
