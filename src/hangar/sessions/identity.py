"""Which workload a sandbox acts for, and its own short-lived AWS credentials.

Every sandbox started for a runtime version is bound here (by sandbox id) before its agent runs, because the real
``bedrock-agentcore`` SDK fetches credentials while the agent is still importing; the session id is added when a
session takes the sandbox. The credentials are minted on the first fetch, refreshed when less than a third of
their life is left, and dropped with the sandbox. Nothing here is persisted: a restart ends every sandbox anyway.

The sandbox reaches the host through two Unix sockets its supervisor splices loopback ports to (``Outbound``):
the identity endpoint (TLS, for ``bedrock-agentcore.<region>.amazonaws.com``) and the container credentials
endpoint (plain HTTP, as botocore's container provider expects). ``environment`` is what points the agent's
botocore and the ``bedrock-agentcore`` SDK at them.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import string
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from hangar.domain.invocation import InvocationTarget
from hangar.sandbox.base import CA_BUNDLE_PATH, Outbound

IDENTITY_PORT = 9443  # loopback port of the identity endpoint inside a sandbox (unprivileged: no sysctl, no caps)
CREDENTIALS_PORT = 9480  # loopback port of the container credentials endpoint inside a sandbox
IDENTITY_SOCKET = "identity.sock"
CREDENTIALS_SOCKET = "credentials.sock"
CREDENTIALS_PATH = "/hangar/session-credentials"
CREDENTIALS_TTL_S = 3600
_KEY_ALPHABET = string.ascii_uppercase + string.digits
_SECRET_ALPHABET = string.ascii_letters + string.digits + "+/"


def identity_host(region: str) -> str:
    """The data-plane host name the real SDK insists on (it refuses endpoints off AWS host names)."""
    return f"bedrock-agentcore.{region}.amazonaws.com"


@dataclass(frozen=True)
class SessionKeys:
    access_key_id: str
    secret: str = field(repr=False)
    token: str = field(repr=False)
    expires_at: float

    def document(self) -> dict[str, str]:
        """The container credentials provider's JSON answer."""
        expiration = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(self.expires_at))
        return {
            "AccessKeyId": self.access_key_id,
            "SecretAccessKey": self.secret,
            "Token": self.token,
            "Expiration": expiration,
        }


@dataclass
class Binding:
    """One sandbox's identity: its runtime (whose workload identity has the runtime's id as its name)."""

    sandbox_id: str
    runtime_id: str
    version: str
    session_id: str | None = None
    keys: SessionKeys | None = field(default=None, repr=False)
    retired: list[SessionKeys] = field(default_factory=list, repr=False)  # renewed, still valid until they expire

    @property
    def workload(self) -> str:
        return self.runtime_id


class SandboxIdentities:
    """The in-memory table of bound sandboxes and their keys; safe to use from the event loop and worker threads."""

    def __init__(
        self,
        region: str,
        socket_dir: Path | None,
        ttl_s: int = CREDENTIALS_TTL_S,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.region = region
        self.socket_dir = socket_dir  # None: the backend cannot give its sandboxes the identity channel
        self.ttl_s = ttl_s
        self._clock = clock
        self._secret = secrets.token_bytes(32)  # per process: binds authorization tokens to a runtime version
        self._bindings: dict[str, Binding] = {}
        self._by_key: dict[str, Binding] = {}
        self._lock = threading.Lock()

    # -- what sandboxes are given ------------------------------------------------------------------------------

    def outbound(self) -> Outbound | None:
        if self.socket_dir is None:
            return None
        return Outbound(
            socket_dir=self.socket_dir,
            ports=((IDENTITY_PORT, IDENTITY_SOCKET), (CREDENTIALS_PORT, CREDENTIALS_SOCKET)),
            hosts=(identity_host(self.region),),
            template_credentials_port=CREDENTIALS_PORT,
        )

    def environment(self, target: InvocationTarget) -> dict[str, str]:
        """Variables every sandbox of ``target``'s version gets (its template included): where the identity
        endpoint and the credentials are. The authorization token only proves a request came from inside a
        sandbox of this version (not a redirect the agent was tricked into); the peer uid says which one."""
        if self.socket_dir is None:
            return {}
        endpoint = f"https://{identity_host(self.region)}:{IDENTITY_PORT}"
        return {
            "AWS_CONTAINER_CREDENTIALS_FULL_URI": f"http://127.0.0.1:{CREDENTIALS_PORT}{CREDENTIALS_PATH}",
            "AWS_CONTAINER_AUTHORIZATION_TOKEN": self.authorization_token(target.runtime_id, target.version),
            "AWS_CA_BUNDLE": CA_BUNDLE_PATH,
            "BEDROCK_AGENTCORE_DP_ENDPOINT": endpoint,
            "AWS_ENDPOINT_URL_BEDROCK_AGENTCORE": endpoint,
        }

    def authorization_token(self, runtime_id: str, version: str) -> str:
        return hmac.new(self._secret, f"{runtime_id}/{version}".encode(), hashlib.sha256).hexdigest()

    # -- bindings ---------------------------------------------------------------------------------------------

    def bind(self, sandbox_id: str, target: InvocationTarget) -> None:
        with self._lock:
            self._bindings[sandbox_id] = Binding(sandbox_id, target.runtime_id, target.version)

    def rename(self, planned_id: str, sandbox_id: str) -> None:
        """The sandbox got another id than planned (a fork prepared ahead of the request keeps its own)."""
        with self._lock:
            binding = self._bindings.pop(planned_id, None)
            if binding is not None:
                binding.sandbox_id = sandbox_id
                self._bindings[sandbox_id] = binding

    def claim(self, sandbox_id: str, session_id: str) -> None:
        with self._lock:
            binding = self._bindings.get(sandbox_id)
            if binding is not None:
                binding.session_id = session_id

    def forget(self, sandbox_id: str) -> None:
        with self._lock:
            binding = self._bindings.pop(sandbox_id, None)
            if binding is not None:
                for keys in (binding.keys, *binding.retired):
                    if keys is not None:
                        self._by_key.pop(keys.access_key_id, None)

    def binding(self, sandbox_id: str) -> Binding | None:
        return self._bindings.get(sandbox_id)

    def by_access_key(self, access_key_id: str) -> tuple[Binding, SessionKeys] | None:
        """The sandbox an unexpired key belongs to, and the key."""
        binding = self._by_key.get(access_key_id)
        if binding is None:
            return None
        for keys in (binding.keys, *binding.retired):
            if keys is not None and keys.access_key_id == access_key_id and keys.expires_at > self._clock():
                return binding, keys
        return None

    def credentials(self, sandbox_id: str) -> SessionKeys | None:
        """The sandbox's keys, minted on first use and renewed once less than a third of their life is left (botocore
        asks again from 15 minutes before expiry; a third of an hour answers that first ask with a fresh key)."""
        now = self._clock()
        with self._lock:
            binding = self._bindings.get(sandbox_id)
            if binding is None:
                return None
            keys = binding.keys
            if keys is None or keys.expires_at - now < self.ttl_s / 3:
                if keys is not None:
                    for old in [k for k in binding.retired if k.expires_at <= now]:
                        binding.retired.remove(old)
                        self._by_key.pop(old.access_key_id, None)
                    binding.retired.append(keys)
                keys = SessionKeys(
                    access_key_id="ASIA" + "".join(secrets.choice(_KEY_ALPHABET) for _ in range(16)),
                    secret="".join(secrets.choice(_SECRET_ALPHABET) for _ in range(40)),
                    token=secrets.token_urlsafe(96),
                    expires_at=now + self.ttl_s,
                )
                binding.keys = keys
                self._by_key[keys.access_key_id] = binding
            return keys
