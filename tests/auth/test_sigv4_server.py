"""SigV4 against a real ``hangar serve``: botocore-signed requests pass, everything else is a clean 4xx."""

from __future__ import annotations

import json
import re
import stat

import httpx

from tests.auth.signing import send, signed
from tests.support.server import HangarServer

CREDENTIALS = "/hangar/credentials/"


def test_first_start_writes_an_admin_key_file_readable_by_owner_only(auth_server: HangarServer, admin_key) -> None:
    key_id, secret = admin_key
    assert re.fullmatch(r"HGRA[A-Z2-7]{16}", key_id)
    assert len(secret) == 40
    assert stat.S_IMODE(auth_server.credentials_file.stat().st_mode) == 0o600
    assert stat.S_IMODE((auth_server.data_dir / "vault.key").stat().st_mode) == 0o600
    assert secret not in auth_server.log()
    assert secret.encode() not in (auth_server.data_dir / "hangar.db").read_bytes()


def test_signed_request_with_the_admin_key_is_accepted(auth_server: HangarServer, admin_key) -> None:
    response = send(signed("GET", auth_server.url + CREDENTIALS, admin_key))
    assert response.status_code == 200, response.text
    assert admin_key[0] in [c["accessKeyId"] for c in response.json()["credentials"]]


def test_signed_body_is_accepted_and_wrong_secret_refused(auth_server: HangarServer, admin_key) -> None:
    body = json.dumps({"name": "smoke"}).encode()
    created = send(signed("POST", auth_server.url + CREDENTIALS, admin_key, body, {"Content-Type": "application/json"}))
    assert created.status_code == 201, created.text
    wrong = (admin_key[0], "A" * 40)
    refused = send(signed("GET", auth_server.url + CREDENTIALS, wrong))
    assert refused.status_code == 403
    assert refused.headers["x-amzn-ErrorType"] == "InvalidSignatureException"


def test_unsigned_request_is_missing_authentication_token(auth_server: HangarServer) -> None:
    response = httpx.get(auth_server.url + CREDENTIALS)
    assert response.status_code == 403
    assert response.headers["x-amzn-ErrorType"] == "MissingAuthenticationTokenException"
