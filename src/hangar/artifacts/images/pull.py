"""Pull manifests and blobs from another registry (distribution API over HTTPS, anonymous, Basic or Bearer auth).

Nothing a remote registry says is trusted: a manifest is hashed here and compared with the digest asked for, a
blob is written to a temporary file and enters the blob store only if it hashes to its descriptor's digest, and
no blob may be longer than its descriptor says (the read stops there).
"""

from __future__ import annotations

import base64
import json
import re
from collections.abc import Iterator
from contextlib import contextmanager

import httpx

from hangar.artifacts.images.blobs import BlobStore, sha256_digest
from hangar.artifacts.images.errors import ImageError
from hangar.artifacts.images.manifests import ALL_TYPES, MAX_MANIFEST_BYTES

_CHALLENGE = re.compile(r'(\w+)="([^"]*)"')
TIMEOUT = httpx.Timeout(30.0, connect=10.0)


class RemoteRegistry:
    """One registry host; ``credentials`` is (username, password) or None for anonymous pulls."""

    def __init__(self, host: str, credentials: tuple[str, str] | None, insecure: bool) -> None:
        self.host = host
        self.credentials = credentials
        self.insecure = insecure
        self.scheme = "https"
        self._authorization: str | None = None
        self._client = httpx.Client(verify=not insecure, timeout=TIMEOUT, follow_redirects=True)

    def close(self) -> None:
        self._client.close()

    def manifest(self, repository: str, reference: str) -> tuple[bytes, str, str]:
        """(body, media type, digest) of a manifest; a digest reference must match the body's hash."""
        with self._get(repository, f"manifests/{reference}", accept=", ".join(ALL_TYPES)) as response:
            body = _read_capped(response, MAX_MANIFEST_BYTES, f"manifest {reference}")
            media_type = response.headers.get("content-type", "").split(";")[0].strip()
        digest = sha256_digest(body)
        if reference.startswith("sha256:") and digest != reference:
            raise ImageError(f"{self.host}/{repository}@{reference}: the registry sent a manifest hashing to {digest}")
        return body, media_type, digest

    def blob(self, repository: str, digest: str, size: int, store: BlobStore) -> None:
        """Fetch a blob into ``store`` (verified); a no-op when the store already has it."""
        if store.exists(digest):
            return
        tmp = store.new_temp()
        try:
            with self._get(repository, f"blobs/{digest}") as response, tmp.open("wb") as out:
                received = 0
                for chunk in response.iter_bytes(1024 * 1024):
                    received += len(chunk)
                    if received > size:
                        raise ImageError(f"blob {digest} is longer than the {size} bytes its descriptor declares")
                    out.write(chunk)
            if received != size:
                raise ImageError(f"blob {digest} has {received} bytes, its descriptor declares {size}")
            try:
                store.adopt(tmp, digest)
            except Exception:
                raise ImageError(f"blob {digest} from {self.host}/{repository} does not hash to its digest") from None
        finally:
            tmp.unlink(missing_ok=True)

    @contextmanager
    def _get(self, repository: str, path: str, accept: str | None = None) -> Iterator[httpx.Response]:
        headers = {"Accept": accept} if accept else {}
        response = self._send(repository, path, headers)
        if response.status_code == 401:
            challenge = response.headers.get("www-authenticate", "")
            response.close()
            self._authorization = self._authorize(challenge, repository)
            response = self._send(repository, path, headers)
        try:
            if response.status_code != 200:
                hint = (
                    " (check the registry credentials in HANGAR_REGISTRY_AUTH)"
                    if response.status_code in (401, 403)
                    else ""
                )
                raise ImageError(
                    f"{self.host}/{repository}: GET {path.split('/')[0]} {path.split('/', 1)[-1][:80]} answered "
                    f"HTTP {response.status_code}{_said(response)}{hint}"
                )
            yield response
        finally:
            response.close()

    def _send(self, repository: str, path: str, headers: dict[str, str]) -> httpx.Response:
        if self._authorization:
            headers = {**headers, "Authorization": self._authorization}
        url = f"{self.scheme}://{self.host}/v2/{repository}/{path}"
        try:
            return self._client.send(self._client.build_request("GET", url, headers=headers), stream=True)
        except httpx.ConnectError as exc:
            if self.insecure and self.scheme == "https":
                self.scheme = "http"  # an insecure registry may speak plain HTTP (as docker falls back)
                return self._send(repository, path, headers)
            raise ImageError(f"cannot reach registry {self.host}: {exc}") from None
        except httpx.HTTPError as exc:
            raise ImageError(f"registry {self.host} failed: {type(exc).__name__}: {exc}") from None

    def _basic(self) -> str | None:
        if self.credentials is None:
            return None
        raw = f"{self.credentials[0]}:{self.credentials[1]}".encode()
        return "Basic " + base64.b64encode(raw).decode()

    def _authorize(self, challenge: str, repository: str) -> str:
        scheme = challenge.split(" ", 1)[0].lower()
        if scheme == "basic":
            basic = self._basic()
            if basic is None:
                raise ImageError(f"registry {self.host} requires credentials (configure HANGAR_REGISTRY_AUTH)")
            return basic
        if scheme != "bearer":
            raise ImageError(f"registry {self.host} asks for an unsupported authentication scheme {scheme!r}")
        params = dict(_CHALLENGE.findall(challenge))
        realm = params.get("realm")
        if not realm or not realm.startswith(("https://", "http://")):
            raise ImageError(f"registry {self.host} sent a bearer challenge without a usable realm")
        query = {"scope": params.get("scope") or f"repository:{repository}:pull"}
        if params.get("service"):
            query["service"] = params["service"]
        headers = {"Authorization": basic} if (basic := self._basic()) else {}
        try:
            answer = self._client.get(realm, params=query, headers=headers)
        except httpx.HTTPError as exc:
            raise ImageError(f"token service of {self.host} failed: {type(exc).__name__}") from None
        if answer.status_code != 200:
            raise ImageError(f"token service of {self.host} answered HTTP {answer.status_code}")
        try:
            document = answer.json()
            token = document.get("token") or document.get("access_token")
        except ValueError:
            token = None
        if not isinstance(token, str) or not token:
            raise ImageError(f"token service of {self.host} returned no token")
        return f"Bearer {token}"


def _read_capped(response: httpx.Response, limit: int, what: str) -> bytes:
    chunks: list[bytes] = []
    size = 0
    for chunk in response.iter_bytes():
        size += len(chunk)
        if size > limit:
            raise ImageError(f"{what} exceeds {limit} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


def _said(response: httpx.Response) -> str:
    """The registry's own error message (distribution spec body), briefly, if it sent one."""
    try:
        document = json.loads(_read_capped(response, 4096, "error body"))
        message = document["errors"][0].get("message") or document["errors"][0].get("code")
    except Exception:
        return ""
    return f": {str(message)[:200]}"
