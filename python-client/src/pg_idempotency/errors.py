"""The one exception type of pg_idempotency's calls."""
from __future__ import annotations

from typing import Optional

import psycopg


class IdempotencyError(Exception):
    """An error of a pg_idempotency call, carrying the SQLSTATE: IK001 (the
    token does not hold the key), IK002 (same token, different response),
    55P03 (once(): another transaction still holds the key), 22023, 54000, ...
    A lost connection is class 08 (connection_error), never an outcome."""

    def __init__(self, sqlstate: str, message: str) -> None:
        super().__init__(message)
        self.sqlstate = sqlstate

    @property
    def connection_error(self) -> bool:
        """The connection is gone or could not be made: nothing about the key
        can be concluded; retry on a new connection."""
        return self.sqlstate.startswith("08")


def is_connection_lost(conn: object, exc: BaseException) -> bool:
    """A psycopg error that means the connection is gone (class 08, the
    shutdown codes of class 57, or a connection psycopg has marked broken)."""
    if bool(getattr(conn, "broken", False)) or bool(getattr(conn, "closed", False)):
        return True
    state = getattr(exc, "sqlstate", None) or ""
    if state.startswith("08") or state in ("57P01", "57P02", "57P03"):
        return True
    return isinstance(exc, psycopg.OperationalError) and not state


def wrap(exc: psycopg.Error, conn: object, what: str) -> IdempotencyError:
    """The IdempotencyError for a psycopg error of one of our statements."""
    if is_connection_lost(conn, exc):
        return IdempotencyError("08006", f"idempotency: connection lost during {what}: {exc}")
    state: Optional[str] = exc.sqlstate
    diag = exc.diag
    message = diag.message_primary or str(exc).strip()
    if diag.message_detail:
        message += f" DETAIL: {diag.message_detail}"
    if diag.message_hint:
        message += f" HINT: {diag.message_hint}"
    return IdempotencyError(state or "XX000", message)
