"""The calls on a psycopg 3 Connection (the async forms are in aio.py).

Transactions follow the C++ client's rules. claim(), finish(), checkpoint(),
release(), lookup(), sweep() and fingerprint() run inside whatever transaction
the connection has (psycopg opens one implicitly unless autocommit is on; the
caller commits). execute() and once() run BEGIN ... COMMIT of their own on an
idle connection and join an open transaction under a savepoint: a raising
handler rolls back the key and its work (only to the savepoint) and the
exception propagates unchanged. A connection in a failed transaction is
refused with IdempotencyError 25P02.

Behind a transaction pooler (PgBouncer pool_mode = transaction) connect with
prepare_threshold=None: psycopg then never prepares a statement. A connection
that still meets a lost prepared statement (26000 / 42P05) is switched to
prepare_threshold=None for good, and execute()/once() start over once when
nothing but their BEGIN/SAVEPOINT had run.
"""
from __future__ import annotations

from datetime import datetime
from typing import Any, Callable, Optional

import psycopg

from . import _statements as st
from ._types import ClaimResult, Duration, KeyRecord, Outcome, Response
from .errors import IdempotencyError, wrap

Handler = Callable[[psycopg.Connection], Response]
OnceHandler = Callable[[psycopg.Connection], Any]


def _one(conn: psycopg.Connection, sql: str, params: tuple, what: str) -> Optional[tuple]:
    try:
        with conn.cursor() as cur:
            cur.execute(sql, params)
            return cur.fetchone()
    except psycopg.Error as e:
        if e.sqlstate in st.STATEMENTS_LOST:
            conn.prepare_threshold = None
        raise wrap(e, conn, what) from e


def claim(conn: psycopg.Connection, scope: str, key: str, *, fingerprint: Optional[bytes] = None,
          request_json: Optional[str] = None, ttl: Duration = None, lease: Duration = None,
          wait: Duration = None, trace_context: Any = st.NO_TRACE_CONTEXT) -> ClaimResult:
    """idempotency.claim(); request_json: fingerprinted by the server
    (idempotency.fingerprint) in the same statement, instead of fingerprint.
    trace_context: a W3C traceparent stored with the key (extension 1.2; the
    result's trace_context is then the stored one on REPLAY / IN_PROGRESS)."""
    sql, params = st.claim_params(scope, key, fingerprint, request_json, ttl, lease, wait, trace_context)
    return st.decode_claim(_one(conn, sql, params, "claim"))


def finish(conn: psycopg.Connection, scope: str, key: str, token: int, response: Response) -> bool:
    return bool(_one(conn, st.FINISH, st.finish_params(scope, key, token, response), "finish")[0])


def checkpoint(conn: psycopg.Connection, scope: str, key: str, token: int, recovery_point: str,
               lease: Duration = None) -> datetime:
    """Records progress of a multi-step operation, renews the lease and
    returns the new locked_until."""
    row = _one(conn, st.CHECKPOINT, (scope, key, token, recovery_point, st.interval(lease)), "checkpoint")
    return row[0]


def release(conn: psycopg.Connection, scope: str, key: str, token: int) -> bool:
    return bool(_one(conn, st.RELEASE, (scope, key, token), "release")[0])


def lookup(conn: psycopg.Connection, scope: str, key: str) -> Optional[KeyRecord]:
    return st.decode_lookup(_one(conn, st.LOOKUP, (scope, key), "lookup"))


def sweep(conn: psycopg.Connection, batch_size: Optional[int] = None) -> int:
    return int(_one(conn, st.SWEEP, (batch_size,), "sweep")[0] or 0)


def fingerprint(conn: psycopg.Connection, request_json: str) -> bytes:
    """idempotency.fingerprint(): SHA-256 of the canonical JSON."""
    return bytes(_one(conn, st.FINGERPRINT, (request_json,), "fingerprint")[0])


def execute(conn: psycopg.Connection, scope: str, key: str, handler: Handler, *,
            fingerprint: Optional[bytes] = None, request_json: Optional[str] = None,
            ttl: Duration = None, lease: Duration = None, wait: Duration = None) -> ClaimResult:
    """claim -> handler(conn) -> finish in one transaction. Returns the new
    response (CLAIMED), the stored one (REPLAY), or IN_PROGRESS / MISMATCH
    without running the handler. The handler must not end the transaction."""
    own = st.owns_transaction(conn, "execute()")
    for attempt in (0, 1):
        before_handler = True
        try:
            with conn.transaction(savepoint_name=None if own else st.SAVEPOINT):
                result = claim(conn, scope, key, fingerprint=fingerprint, request_json=request_json,
                               ttl=ttl, lease=lease, wait=wait)
                before_handler = False
                if result.outcome is not Outcome.CLAIMED:
                    return result
                response = handler(conn)
                if not isinstance(response, Response):
                    raise TypeError("idempotency: execute()'s handler must return a Response")
                finish(conn, scope, key, result.token, response)
                result.response = response
            return result
        except IdempotencyError as e:
            if before_handler and attempt == 0 and e.sqlstate in st.STATEMENTS_LOST:
                continue  # nothing ran but BEGIN/SAVEPOINT, now unnamed statements: start over
            raise
        except psycopg.Error as e:
            if before_handler:  # our BEGIN / SAVEPOINT failed
                raise wrap(e, conn, "execute()") from e
            if conn.broken or conn.closed:
                raise wrap(e, conn, "execute()") from e
            raise
    raise AssertionError("unreachable")


def once(conn: psycopg.Connection, scope: str, key: str, handler: OnceHandler, *,
         ttl: Duration = None, wait: Duration = None) -> bool:
    """For idempotent consumers: idempotency.once(), then handler(conn) in
    the same transaction when the key is new. Returns whether the handler ran
    (False: already processed, acknowledge the message). Another transaction
    still holding the key past wait raises IdempotencyError 55P03: do not
    acknowledge, it may yet roll back."""
    own = st.owns_transaction(conn, "once()")
    for attempt in (0, 1):
        before_handler = True
        try:
            with conn.transaction(savepoint_name=None if own else st.SAVEPOINT):
                first = bool(_one(conn, st.ONCE, (scope, key, st.interval(ttl), st.interval(wait) or
                                                   st.interval(0)), "once")[0])
                before_handler = False
                if first:
                    handler(conn)
            return first
        except IdempotencyError as e:
            if before_handler and attempt == 0 and e.sqlstate in st.STATEMENTS_LOST:
                continue
            raise
        except psycopg.Error as e:
            if before_handler or conn.broken or conn.closed:
                raise wrap(e, conn, "once()") from e
            raise
    raise AssertionError("unreachable")
