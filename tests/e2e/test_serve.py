"""`hangar serve` starts on embedded defaults and answers its health route."""

from __future__ import annotations

import httpx

from tests.support.server import HangarServer


def test_healthz_reports_version_region_account(hangar: HangarServer) -> None:
    response = httpx.get(f"{hangar.url}/healthz")
    assert response.status_code == 200
    body = response.json()
    assert body["region"] == "us-west-2"
    assert body["accountId"] == "123456789012"
    assert body["version"]


def test_unknown_route_is_an_aws_shaped_404(hangar: HangarServer) -> None:
    response = httpx.get(f"{hangar.url}/no/such/thing")
    assert response.status_code == 404
    assert response.headers["x-amzn-ErrorType"] == "ResourceNotFoundException"
    assert "message" in response.json()


def test_settings_from_flags(tmp_path) -> None:  # type: ignore[no-untyped-def]
    server = HangarServer(data_dir=tmp_path / "d", extra_args=["--region", "eu-west-1", "--account-id", "000011112222"])
    server.start()
    try:
        body = httpx.get(f"{server.url}/healthz").json()
        assert body["region"] == "eu-west-1" and body["accountId"] == "000011112222"
        assert (tmp_path / "d" / "hangar.db").exists()
    finally:
        server.stop()
