"""The SQL every call runs (schema-qualified, never trusting search_path),
its parameters and the decoding of its rows: shared by the sync and the
async forms."""
from __future__ import annotations

import json
from datetime import timedelta
from typing import Any, Mapping, Optional, Sequence

from psycopg import pq

from ._types import ClaimResult, Duration, KeyRecord, KeyState, Outcome, Response
from .errors import IdempotencyError

_CLAIM_COLUMNS = (
    "SELECT c.outcome::text, c.token, c.attempt, c.recovery_point, c.response_status, "
    "c.response_headers, c.response_body, c.expires_at, c.locked_until FROM "
)
CLAIM = _CLAIM_COLUMNS + (
    "idempotency.claim(%s::text, %s::text, %s::bytea, %s::interval, %s::interval, %s::interval) AS c"
)
CLAIM_JSON = _CLAIM_COLUMNS + (
    "idempotency.claim(%s::text, %s::text, idempotency.fingerprint(%s::jsonb), "
    "%s::interval, %s::interval, %s::interval) AS c"
)
# Extension 1.2: claim's seventh argument stores the request's W3C traceparent
# with the key, claim_result.trace_context returns the stored one. Sent only
# when the caller passes a trace context, so 1.0 and 1.1 keep working.
_TRACED_COLUMNS = _CLAIM_COLUMNS.replace(" FROM ", ", c.trace_context FROM ")
CLAIM_TRACED = _TRACED_COLUMNS + (
    "idempotency.claim(%s::text, %s::text, %s::bytea, %s::interval, %s::interval, %s::interval, %s::text) AS c"
)
CLAIM_JSON_TRACED = _TRACED_COLUMNS + (
    "idempotency.claim(%s::text, %s::text, idempotency.fingerprint(%s::jsonb), "
    "%s::interval, %s::interval, %s::interval, %s::text) AS c"
)
FINISH = "SELECT idempotency.finish(%s::text, %s::text, %s::int8, %s::int4, %s::bytea, %s::jsonb)"
CHECKPOINT = "SELECT idempotency.checkpoint(%s::text, %s::text, %s::int8, %s::text, %s::interval)"
RELEASE = "SELECT idempotency.release(%s::text, %s::text, %s::int8)"
LOOKUP = (
    "SELECT k.scope, k.key, k.fingerprint, k.state::text, k.token, k.attempt, k.recovery_point, "
    "k.locked_until, k.created_at, k.completed_at, k.expires_at, k.response_status, "
    "k.response_headers, k.response_body FROM idempotency.lookup(%s::text, %s::text) AS k"
)
SWEEP = "SELECT idempotency.sweep(%s::int4)"
FINGERPRINT = "SELECT idempotency.fingerprint(%s::jsonb)"
ONCE = "SELECT idempotency.once(%s::text, %s::text, %s::interval, %s::interval)"

# Savepoint name inside a caller's transaction (the C++ client's too).
SAVEPOINT = "idempotency_execute"

# A named statement missing (26000) or already there (42P05): psycopg's
# prepared statements meet a transaction pooler (PgBouncer pool_mode =
# transaction) that moved the connection between server connections.
STATEMENTS_LOST = ("26000", "42P05")


# claim()'s trace_context when none is passed (six arguments: any extension version).
NO_TRACE_CONTEXT: Any = object()


def interval(d: Duration) -> Optional[timedelta]:
    if d is None or isinstance(d, timedelta):
        return d
    return timedelta(seconds=float(d))


def claim_params(scope: str, key: str, fingerprint: Optional[bytes], request_json: Optional[str],
                 ttl: Duration, lease: Duration, wait: Duration,
                 trace_context: Any = NO_TRACE_CONTEXT) -> tuple[str, tuple[Any, ...]]:
    third: Any = request_json if request_json is not None else fingerprint
    params = (scope, key, third, interval(ttl), interval(lease), interval(wait) or timedelta(0))
    if trace_context is not NO_TRACE_CONTEXT:
        return (CLAIM_JSON_TRACED if request_json is not None else CLAIM_TRACED), params + (trace_context,)
    return (CLAIM_JSON if request_json is not None else CLAIM), params


def headers_json(headers: Optional[Mapping[str, Any]]) -> Optional[str]:
    if not headers:
        return None
    return json.dumps({k: (v if isinstance(v, str) else list(v)) for k, v in headers.items()},
                      ensure_ascii=False)


def finish_params(scope: str, key: str, token: int, response: Response) -> tuple[Any, ...]:
    return (scope, key, token, response.status, response.body, headers_json(response.headers))


def _headers(value: Any) -> Optional[dict]:
    if value is None:
        return None
    if isinstance(value, (str, bytes)):
        value = json.loads(value)
    return dict(value)


def _bytes(value: Any) -> bytes:
    return b"" if value is None else bytes(value)


def decode_claim(row: Optional[Sequence[Any]]) -> ClaimResult:
    if row is None:
        raise IdempotencyError("XX000", "idempotency: claim returned no row")
    outcome, token, attempt, recovery_point, status, headers, body, expires_at, locked_until = row[:9]
    try:
        out = ClaimResult(Outcome(outcome))
    except ValueError:
        raise IdempotencyError("XX000", f"idempotency: unknown claim outcome {outcome!r}") from None
    out.token = token
    out.attempt = attempt or 0
    out.recovery_point = recovery_point
    if status is not None:
        out.response = Response(status, _bytes(body), _headers(headers))
    out.expires_at = expires_at
    out.locked_until = locked_until
    if len(row) > 9:
        out.trace_context = row[9]
    return out


def decode_lookup(row: Optional[Sequence[Any]]) -> Optional[KeyRecord]:
    if row is None or row[0] is None:  # lookup() returned NULL: absent or expired
        return None
    (scope, key, fingerprint, state, token, attempt, recovery_point, locked_until, created_at,
     completed_at, expires_at, status, headers, body) = row
    rec = KeyRecord(scope, key, None if fingerprint is None else bytes(fingerprint), KeyState(state),
                    token or 0, attempt or 0, recovery_point, locked_until, created_at, completed_at,
                    expires_at)
    if status is not None:
        rec.response = Response(status, _bytes(body), _headers(headers))
    return rec


def owns_transaction(conn: Any, what: str) -> bool:
    """Whether execute()/once() run BEGIN ... COMMIT of their own (nothing
    open on the connection) or join the caller's transaction under a
    savepoint; refuses a failed, busy or lost connection."""
    if conn.closed or conn.broken:
        raise IdempotencyError("08006", f"idempotency: connection lost before {what}")
    status = conn.info.transaction_status
    if status == pq.TransactionStatus.IDLE:
        return True
    if status == pq.TransactionStatus.INTRANS:
        return False
    if status == pq.TransactionStatus.INERROR:
        raise IdempotencyError("25P02", f"idempotency: {what} on a connection whose transaction has failed; "
                                        "roll it back first")
    if status == pq.TransactionStatus.ACTIVE:
        raise IdempotencyError("25000", f"idempotency: {what} while a command is still in progress on the connection")
    raise IdempotencyError("08006", f"idempotency: connection lost before {what}")
