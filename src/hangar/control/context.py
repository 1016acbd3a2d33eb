"""What every use case needs: the store, where resources live, and a hook run after each committed write."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from sqlalchemy import Connection
from sqlalchemy.exc import IntegrityError

from hangar.control.commands import request_hash
from hangar.domain.arns import Place
from hangar.domain.errors import ConflictError, ValidationError
from hangar.store import idempotency
from hangar.store.transactions import Store, utcnow

# How long a clientToken is remembered (AWS keeps them for hours; a day covers any sane retry policy).
TOKEN_TTL = timedelta(hours=24)


@dataclass
class Context:
    store: Store
    place: Place
    token_secret: bytes
    after_write: Callable[[], None]


def idempotent_write(
    ctx: Context, operation: str, command: Any, fn: Callable[[Connection], dict[str, Any]]
) -> dict[str, Any]:
    """Run ``fn`` in one transaction; with a clientToken, a faithful retry gets the first answer back.

    The token, the request fingerprint and the answer are stored in the same transaction as the change itself,
    so an acknowledged write and its token are durable together.
    """
    token: str | None = getattr(command, "client_token", None)
    fingerprint = request_hash(command)

    def transaction(conn: Connection) -> dict[str, Any]:
        if token is not None:
            seen = idempotency.recall(conn, operation, token)
            if seen is not None:
                if seen.request_hash != fingerprint:
                    raise ValidationError(
                        "The clientToken was already used with different parameters",
                        reason="IdempotentParameterMismatchException",
                    )
                return seen.response
        response = fn(conn)
        if token is not None:
            idempotency.remember(conn, operation, token, fingerprint, response, utcnow())
        return response

    try:
        result = ctx.store.write(transaction)
    except IntegrityError:
        # Another writer (another gateway on the same database) won a race on a unique key; once more sees it.
        try:
            result = ctx.store.write(transaction)
        except IntegrityError:
            raise ConflictError("A concurrent request changed the same resource; retry") from None
    ctx.after_write()
    return result
