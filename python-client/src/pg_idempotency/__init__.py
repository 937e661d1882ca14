"""pg_idempotency: run request handlers and message consumers exactly once
with the pg_idempotency PostgreSQL extension, on psycopg 3.

    import psycopg, pg_idempotency as idem
    with psycopg.connect("dbname=app") as conn:
        r = idem.execute(conn, "payments", key, lambda c: idem.Response(201, b'{"id": 7}'),
                         request_json=body)

The async forms live in pg_idempotency.aio, the ASGI middleware in
pg_idempotency.asgi, the Django one in pg_idempotency.django and the consumer
helper in pg_idempotency.consumer.
"""
from ._types import ClaimResult, KeyRecord, KeyState, Outcome, Response
from .client import checkpoint, claim, execute, finish, fingerprint, lookup, once, release, sweep
from .errors import IdempotencyError

__version__ = "1.2.0"
__all__ = [
    "ClaimResult", "IdempotencyError", "KeyRecord", "KeyState", "Outcome", "Response",
    "checkpoint", "claim", "execute", "finish", "fingerprint", "lookup", "once", "release", "sweep",
]
