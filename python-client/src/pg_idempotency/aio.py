"""The calls on a psycopg 3 AsyncConnection: the same names, arguments,
transaction rules and errors as the sync forms in client.py. Handlers may be
plain functions or coroutine functions."""
from __future__ import annotations

import inspect
from datetime import datetime
from typing import Any, Awaitable, Callable, Optional, Union

import psycopg

from . import _statements as st
from ._types import ClaimResult, Duration, KeyRecord, Outcome, Response
from .errors import IdempotencyError, wrap

Handler = Callable[[psycopg.AsyncConnection], Union[Response, Awaitable[Response]]]
OnceHandler = Callable[[psycopg.AsyncConnection], Any]


async def _one(conn: psycopg.AsyncConnection, sql: str, params: tuple, what: str) -> Optional[tuple]:
    try:
        async with conn.cursor() as cur:
            await cur.execute(sql, params)
            return await cur.fetchone()
    except psycopg.Error as e:
        if e.sqlstate in st.STATEMENTS_LOST:
            conn.prepare_threshold = None
        raise wrap(e, conn, what) from e


async def _call(handler: Callable[..., Any], conn: psycopg.AsyncConnection) -> Any:
    out = handler(conn)
    return await out if inspect.isawaitable(out) else out


async def claim(conn: psycopg.AsyncConnection, scope: str, key: str, *, fingerprint: Optional[bytes] = None,
                request_json: Optional[str] = None, ttl: Duration = None, lease: Duration = None,
                wait: Duration = None, trace_context: Any = st.NO_TRACE_CONTEXT) -> ClaimResult:
    sql, params = st.claim_params(scope, key, fingerprint, request_json, ttl, lease, wait, trace_context)
    return st.decode_claim(await _one(conn, sql, params, "claim"))


async def finish(conn: psycopg.AsyncConnection, scope: str, key: str, token: int, response: Response) -> bool:
    return bool((await _one(conn, st.FINISH, st.finish_params(scope, key, token, response), "finish"))[0])


async def checkpoint(conn: psycopg.AsyncConnection, scope: str, key: str, token: int, recovery_point: str,
                     lease: Duration = None) -> datetime:
    row = await _one(conn, st.CHECKPOINT, (scope, key, token, recovery_point, st.interval(lease)), "checkpoint")
    return row[0]


async def release(conn: psycopg.AsyncConnection, scope: str, key: str, token: int) -> bool:
    return bool((await _one(conn, st.RELEASE, (scope, key, token), "release"))[0])


async def lookup(conn: psycopg.AsyncConnection, scope: str, key: str) -> Optional[KeyRecord]:
    return st.decode_lookup(await _one(conn, st.LOOKUP, (scope, key), "lookup"))


async def sweep(conn: psycopg.AsyncConnection, batch_size: Optional[int] = None) -> int:
    return int((await _one(conn, st.SWEEP, (batch_size,), "sweep"))[0] or 0)


async def fingerprint(conn: psycopg.AsyncConnection, request_json: str) -> bytes:
    return bytes((await _one(conn, st.FINGERPRINT, (request_json,), "fingerprint"))[0])


async def execute(conn: psycopg.AsyncConnection, scope: str, key: str, handler: Handler, *,
                  fingerprint: Optional[bytes] = None, request_json: Optional[str] = None,
                  ttl: Duration = None, lease: Duration = None, wait: Duration = None) -> ClaimResult:
    own = st.owns_transaction(conn, "execute()")
    for attempt in (0, 1):
        before_handler = True
        try:
            async with conn.transaction(savepoint_name=None if own else st.SAVEPOINT):
                result = await claim(conn, scope, key, fingerprint=fingerprint, request_json=request_json,
                                     ttl=ttl, lease=lease, wait=wait)
                before_handler = False
                if result.outcome is not Outcome.CLAIMED:
                    return result
                response = await _call(handler, conn)
                if not isinstance(response, Response):
                    raise TypeError("idempotency: execute()'s handler must return a Response")
                await finish(conn, scope, key, result.token, response)
                result.response = response
            return result
        except IdempotencyError as e:
            if before_handler and attempt == 0 and e.sqlstate in st.STATEMENTS_LOST:
                continue
            raise
        except psycopg.Error as e:
            if before_handler or conn.broken or conn.closed:
                raise wrap(e, conn, "execute()") from e
            raise
    raise AssertionError("unreachable")


async def once(conn: psycopg.AsyncConnection, scope: str, key: str, handler: OnceHandler, *,
               ttl: Duration = None, wait: Duration = None) -> bool:
    own = st.owns_transaction(conn, "once()")
    for attempt in (0, 1):
        before_handler = True
        try:
            async with conn.transaction(savepoint_name=None if own else st.SAVEPOINT):
                row = await _one(conn, st.ONCE, (scope, key, st.interval(ttl), st.interval(wait) or
                                                 st.interval(0)), "once")
                first = bool(row[0])
                before_handler = False
                if first:
                    await _call(handler, conn)
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
