"""The identity data plane's tables: cached resource tokens and pending USER_FEDERATION sessions.

Rows hold vault ciphertexts only (sealed by ``identity/dataplane.py``); this module never sees a token in clear.
Status changes of a session are compare-and-set, so a callback replayed twice or two CompleteResourceTokenAuth calls
racing each other cannot both win.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime

from sqlalchemy import ColumnElement, Connection, Engine, and_, delete, insert, select, update

from hangar.store.tables import identity_oauth_sessions as sessions_table
from hangar.store.tables import identity_tokens as tokens_table
from hangar.store.transactions import Store, as_utc, utcnow

PENDING = "PENDING"  # authorization URL handed out, the user has not come back yet
AUTHORIZED = "AUTHORIZED"  # the IdP redirected back and the code was exchanged; waiting for the user binding
COMPLETED = "COMPLETED"  # bound to its user; the token moved to the cache
FAILED = "FAILED"


@dataclass(frozen=True)
class TokenKey:
    workload: str
    user_id: str  # "" for a workload's own (M2M) tokens
    provider: str
    flow: str
    scopes_key: str

    def context(self, part: str) -> str:
        """The vault context binding a ciphertext to this row and purpose."""
        return f"identity-token:{self.workload}:{self.user_id}:{self.provider}:{self.flow}:{self.scopes_key}:{part}"


@dataclass(frozen=True)
class CachedToken:
    key: TokenKey
    scopes: list[str]
    access_token_sealed: bytes = field(repr=False)
    refresh_token_sealed: bytes | None = field(repr=False)
    expires_at: datetime | None
    issued_at: datetime | None = None  # when this row was written (the token's lifetime starts about then)


@dataclass(frozen=True)
class OAuthSession:
    session_id: str
    state_hash: str
    workload: str
    user_id: str
    provider: str
    scopes: list[str]
    verifier_sealed: bytes = field(repr=False)
    return_url: str | None
    custom_state_sealed: bytes | None = field(repr=False)
    status: str
    expires_at: datetime
    access_token_sealed: bytes | None = field(default=None, repr=False)
    refresh_token_sealed: bytes | None = field(default=None, repr=False)
    token_expires_at: datetime | None = None

    def context(self, part: str) -> str:
        return f"identity-session:{self.session_id}:{part}"


class IdentityTokenStore:
    """Writes that carry sealed values take a ``make`` callable run inside the write transaction: the vault's key
    rotation relies on every seal happening under the store's writer lock (share the vault's ``Store``)."""

    def __init__(self, store: Store | Engine) -> None:
        self._store = store if isinstance(store, Store) else Store(store)

    # -- token cache ----------------------------------------------------------------------------------------

    def token(self, key: TokenKey) -> CachedToken | None:
        def read(conn: Connection) -> CachedToken | None:
            row = conn.execute(select(tokens_table).where(_key_clause(key))).mappings().first()
            if row is None:
                return None
            return CachedToken(
                key=key,
                scopes=list(row["scopes"]),
                access_token_sealed=row["access_token_sealed"],
                refresh_token_sealed=row["refresh_token_sealed"],
                expires_at=as_utc(row["expires_at"]) if row["expires_at"] is not None else None,
                issued_at=as_utc(row["updated_at"]),
            )

        return self._store.read(read)

    def put_token(self, make: Callable[[], CachedToken]) -> None:
        self._store.write(lambda conn: _upsert_token(conn, make()))

    def drop_token(self, key: TokenKey) -> None:
        self._store.write(lambda conn: conn.execute(delete(tokens_table).where(_key_clause(key))))

    # -- USER_FEDERATION sessions ---------------------------------------------------------------------------

    def create_session(self, make: Callable[[], OAuthSession]) -> None:
        def write(conn: Connection) -> None:
            session = make()
            conn.execute(delete(sessions_table).where(sessions_table.c.expires_at < utcnow()))
            conn.execute(
                insert(sessions_table).values(
                    session_id=session.session_id,
                    state_hash=session.state_hash,
                    workload=session.workload,
                    user_id=session.user_id,
                    provider=session.provider,
                    scopes=session.scopes,
                    verifier_sealed=session.verifier_sealed,
                    return_url=session.return_url,
                    custom_state_sealed=session.custom_state_sealed,
                    status=session.status,
                    expires_at=session.expires_at,
                    created_at=utcnow(),
                )
            )

        self._store.write(write)

    def session(self, session_id: str) -> OAuthSession | None:
        return self._store.read(lambda conn: _one_session(conn, sessions_table.c.session_id == session_id))

    def session_by_state(self, state_hash: str) -> OAuthSession | None:
        return self._store.read(lambda conn: _one_session(conn, sessions_table.c.state_hash == state_hash))

    def authorize(
        self, session_id: str, make: Callable[[], tuple[bytes, bytes | None]], token_expires_at: datetime | None
    ) -> bool:
        """PENDING → AUTHORIZED with the exchanged tokens (``make`` seals them); False if no longer pending."""

        def values() -> dict[str, object]:
            access, refresh = make()
            return {
                "status": AUTHORIZED,
                "access_token_sealed": access,
                "refresh_token_sealed": refresh,
                "token_expires_at": token_expires_at,
            }

        return self._transition(session_id, PENDING, values)

    def fail(self, session_id: str) -> bool:
        return self._transition(session_id, PENDING, lambda: {"status": FAILED})

    def complete(self, session_id: str, make: Callable[[], CachedToken]) -> bool:
        """AUTHORIZED → COMPLETED and the token into the cache, in one transaction."""

        def write(conn: Connection) -> bool:
            moved = conn.execute(
                update(sessions_table)
                .where(and_(sessions_table.c.session_id == session_id, sessions_table.c.status == AUTHORIZED))
                .values(status=COMPLETED, access_token_sealed=None, refresh_token_sealed=None)
            ).rowcount
            if moved != 1:
                return False
            _upsert_token(conn, make())
            return True

        return self._store.write(write)

    def _transition(self, session_id: str, expected: str, values: Callable[[], dict[str, object]]) -> bool:
        def write(conn: Connection) -> bool:
            statement = (
                update(sessions_table)
                .where(and_(sessions_table.c.session_id == session_id, sessions_table.c.status == expected))
                .values(**values())
            )
            return conn.execute(statement).rowcount == 1

        return self._store.write(write)


def _key_clause(key: TokenKey) -> ColumnElement[bool]:
    c = tokens_table.c
    return and_(
        c.workload == key.workload,
        c.user_id == key.user_id,
        c.provider == key.provider,
        c.flow == key.flow,
        c.scopes_key == key.scopes_key,
    )


def _upsert_token(conn: Connection, token: CachedToken) -> None:
    key = token.key
    conn.execute(delete(tokens_table).where(_key_clause(key)))
    conn.execute(
        insert(tokens_table).values(
            workload=key.workload,
            user_id=key.user_id,
            provider=key.provider,
            flow=key.flow,
            scopes_key=key.scopes_key,
            scopes=token.scopes,
            access_token_sealed=token.access_token_sealed,
            refresh_token_sealed=token.refresh_token_sealed,
            expires_at=token.expires_at,
            updated_at=utcnow(),
        )
    )


def _one_session(conn: Connection, clause: ColumnElement[bool]) -> OAuthSession | None:
    row = conn.execute(select(sessions_table).where(clause)).mappings().first()
    if row is None:
        return None
    return OAuthSession(
        session_id=row["session_id"],
        state_hash=row["state_hash"],
        workload=row["workload"],
        user_id=row["user_id"],
        provider=row["provider"],
        scopes=list(row["scopes"]),
        verifier_sealed=row["verifier_sealed"],
        return_url=row["return_url"],
        custom_state_sealed=row["custom_state_sealed"],
        status=row["status"],
        expires_at=as_utc(row["expires_at"]),
        access_token_sealed=row["access_token_sealed"],
        refresh_token_sealed=row["refresh_token_sealed"],
        token_expires_at=as_utc(row["token_expires_at"]) if row["token_expires_at"] is not None else None,
    )
