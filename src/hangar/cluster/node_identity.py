"""Workload identity on a ``hangar node``: the identity data plane its sandboxes' channel serves.

The node builds what a gateway builds for ``identity.sock`` and ``credentials.sock``, on the shared store: the token
vault (to open sealed API keys and OAuth client secrets), the workload-access-token key (so tokens minted by a
gateway verify here and the reverse) and the user-JWT check of ``GetWorkloadAccessTokenForJWT`` (auth's JWT
verifier against the runtime's ``customJWTAuthorizer``, read through the control plane's resolver). Both keys are
copies of the first gateway's files; the node refuses to start without them (``identity/shared_keys.py``).

The channel itself is the gateway's (``gateway/identity_channel.py``); ``cli/node.py`` composes it with a
``NodeIdentity``, which has the three attributes it reads: ``settings``, ``sessions`` and ``identity_data``.
"""

from __future__ import annotations

import logging
import secrets
from dataclasses import dataclass
from typing import Any

from sqlalchemy.engine import Engine

from hangar.auth.jwt import JwtAuthorizer
from hangar.config import Settings
from hangar.control.context import Context
from hangar.control.service import ControlPlane
from hangar.domain.arns import Place
from hangar.domain.errors import ServiceUnavailableError
from hangar.domain.invocation import PreparedVersion
from hangar.domain.runtime import RuntimeSpec
from hangar.identity.data_setup import build_identity_data
from hangar.identity.dataplane import IdentityDataPlane
from hangar.identity.setup import Identity, build_identity
from hangar.identity.shared_keys import require_vault_key_file, require_vault_opens, sealed_sample
from hangar.sessions.manager import SessionManager
from hangar.store import idempotency
from hangar.store.transactions import Store

log = logging.getLogger("hangar.cluster")


@dataclass
class NodeIdentity:
    """What the identity channel reads of ``Services`` on a gateway, built for a node."""

    settings: Settings
    sessions: SessionManager
    identity: Identity
    identity_data: IdentityDataPlane

    async def start(self) -> None:
        await self.identity_data.start()  # the vault's rotation is the gateways' job: ``identity`` is not started

    async def stop(self) -> None:
        await self.identity_data.stop()


def _never_prepare(spec: RuntimeSpec) -> PreparedVersion:
    raise ServiceUnavailableError("a node does not build versions through the control plane")


def build_node_identity(settings: Settings, engine: Engine, sessions: SessionManager) -> NodeIdentity | None:
    """The identity data plane on the shared store; RuntimeError (with the fix) when the shared keys are missing or
    wrong. None when the node was given neither key and the store holds no sealed secret yet: it then serves no
    identity at all (as before nodes had it), and says so, rather than make keys of its own that could never open
    what the gateways seal later."""
    store = Store(engine)
    vault_file, wat_file = settings.resolved_vault_key_file, settings.data_dir / "identity" / "wat.key"
    if not vault_file.exists() and not wat_file.exists():
        if sealed_sample(store) is not None:
            raise RuntimeError(
                f"the store holds sealed secrets but this node has neither {vault_file} nor {wat_file}: copy "
                "identity/vault.keys and identity/wat.key from the first gateway's data dir (mode 0600)"
            )
        log.warning(
            "no identity/vault.keys or identity/wat.key in %s: agents on this node get no AWS credentials and no "
            "AgentCore Identity (copy both from the first gateway's data dir, docs/cluster.md)",
            settings.data_dir,
        )
        return None
    require_vault_key_file(vault_file)
    identity = build_identity(settings, engine)
    require_vault_opens(store, identity.box)
    token_secret = store.write(lambda conn: idempotency.secret(conn, "next_token_key", secrets.token_hex(32)))
    where = Place(account_id=settings.account_id, region=settings.region)
    control = ControlPlane(Context(store, where, bytes.fromhex(token_secret), lambda: None), _never_prepare)
    jwt = JwtAuthorizer()

    async def authorize_jwt(token: str, authorizer: dict[str, Any]) -> str | None:
        return (await jwt.authorize(token, authorizer)).subject

    data = build_identity_data(settings.data_dir, identity, authorize_jwt, control.jwt_authorizer_of, node=True)
    return NodeIdentity(settings=settings, sessions=sessions, identity=identity, identity_data=data)
