#!/usr/bin/env python3
"""The demo payment service of pg_idempotency in Python: the same interface as
idempotency-demo-server (C++) and examples/node, on Starlette served by uvicorn,
with the pg_idempotency package's ASGI middleware.

    python3 examples/python/server.py --listen 127.0.0.1:8080 --db "dbname=app" [--pooler]

    POST /payments   Idempotency-Key: <1-255 bytes>
                     {"amount": 100, "currency": "EUR", "delay_ms": 0}
    GET  /payments/count

create_payment below is the business logic alone; the middleware does the key,
the fingerprint, claim, replay, 409/422/400/503 and storing the response, and
runs it inside the transaction that holds the key. Logs: one JSON object a line.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time

import psycopg
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from pg_idempotency.asgi import IdempotencyMiddleware, Options, Reject, make_pool, transaction_options


def log(**fields) -> None:
    fields = {"time": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime()) + f".{int(time.time() * 1000) % 1000:03d}Z",
              **fields}
    sys.stdout.write(json.dumps(fields, separators=(",", ":")) + "\n")
    sys.stdout.flush()


def payment_json(obj) -> Response:
    # The C++ and Node services answer compact JSON; so does this one.
    return Response(json.dumps(obj, separators=(",", ":")), media_type="application/json")


async def create_payment(request: Request) -> Response:
    """POST /payments: runs in the transaction that holds the key (request.state.db)."""
    try:
        body = json.loads(await request.body())
    except ValueError:
        raise Reject(400, "malformed_json", "the request body is not a JSON object") from None
    if not isinstance(body, dict):
        raise Reject(400, "malformed_json", "the request body is not a JSON object")
    amount, currency, delay_ms = body.get("amount"), body.get("currency"), body.get("delay_ms", 0)

    def is_int(v) -> bool:
        return isinstance(v, int) and not isinstance(v, bool)

    if not is_int(amount) or not isinstance(currency, str) or not is_int(delay_ms):
        raise Reject(400, "invalid_request", 'expected {"amount": <int>, "currency": "<str>"}')
    if delay_ms < 0 or delay_ms > 60000:
        raise Reject(400, "invalid_request", "delay_ms must be between 0 and 60000")
    if delay_ms > 0:
        await asyncio.sleep(delay_ms / 1000)
    cur = await request.state.db.execute(
        "INSERT INTO demo.payments (amount, currency, idempotency_key) VALUES (%s, %s, %s) RETURNING id",
        (amount, currency, request.headers.get("idempotency-key", "")))
    (payment_id,) = await cur.fetchone()
    response = payment_json({"id": payment_id, "amount": amount, "currency": currency})
    response.status_code = 201
    return response


async def count_payments(request: Request) -> Response:
    cur = await request.state.db.execute("SELECT count(*) FROM demo.payments")
    (n,) = await cur.fetchone()
    return payment_json({"count": n})


class AccessLog:
    """One JSON line per request."""

    def __init__(self, app) -> None:
        self.app = app

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        start = time.monotonic()
        seen = {"status": None, "replayed": False}

        async def logged_send(message):
            if message["type"] == "http.response.start":
                seen["status"] = message["status"]
                seen["replayed"] = any(n.lower() == b"idempotent-replayed" for n, _ in message.get("headers", []))
            await send(message)

        try:
            await self.app(scope, receive, logged_send)
        finally:
            headers = dict(scope.get("headers", []))
            key = headers.get(b"idempotency-key")
            log(level="info", msg="request", method=scope["method"], path=scope["path"], status=seen["status"],
                key=None if key is None else key.decode("latin-1"), replayed=seen["replayed"],
                duration_ms=round((time.monotonic() - start) * 1000, 2))


def setup_schema(conninfo: str, pooler: bool) -> None:
    with psycopg.connect(conninfo, autocommit=True, prepare_threshold=None if pooler else 5) as conn:
        conn.execute("SET client_min_messages = warning")
        conn.execute("CREATE EXTENSION IF NOT EXISTS pg_idempotency")
        conn.execute("CREATE SCHEMA IF NOT EXISTS demo")
        conn.execute("""CREATE TABLE IF NOT EXISTS demo.payments (
            id bigserial PRIMARY KEY,
            idempotency_key text NOT NULL,
            amount bigint NOT NULL,
            currency text NOT NULL,
            created_at timestamptz NOT NULL DEFAULT now())""")


def create_app(conninfo: str, *, pool_size: int = 16, pooler: bool = False, bench_routes: bool = False,
               acquire_timeout: float = 5.0, access_log: bool = True):
    pool = make_pool(conninfo, pool_size, pooler=pooler)
    routes = [Route("/payments", create_payment, methods=["POST"]),
              Route("/payments/count", count_payments, methods=["GET"])]
    policy = {
        # Scope "payments"; fingerprint idempotency.fingerprint(body), as the C++ and Node services.
        ("POST", "/payments"): Options(scope=lambda request: "payments", fingerprint="json-body"),
        ("GET", "/payments/count"): transaction_options(),
    }
    if bench_routes:  # the baseline of bench/http: the same business logic in a plain transaction
        routes.append(Route("/bench/payments-plain", create_payment, methods=["POST"]))
        policy[("POST", "/bench/payments-plain")] = transaction_options()
    app = Starlette(routes=routes, on_startup=[pool.open], on_shutdown=[pool.close])
    app.add_middleware(IdempotencyMiddleware, pool=pool, routes=policy, acquire_timeout=acquire_timeout)
    return AccessLog(app) if access_log else app


def main() -> None:
    p = argparse.ArgumentParser(description="pg_idempotency demo payment service (Python)")
    p.add_argument("--listen", default="127.0.0.1:8080", help="HOST:PORT")
    p.add_argument("--db", default="", help="libpq conninfo")
    p.add_argument("--pool", type=int, default=16, help="database connections at most")
    p.add_argument("--acquire-timeout", type=float, default=5.0,
                   help="seconds a request waits for a free connection before 503")
    p.add_argument("--pooler", action="store_true",
                   help="--db is a transaction pooler (PgBouncer pool_mode = transaction): no prepared statements")
    p.add_argument("--bench-routes", action="store_true", help="also serve POST /bench/payments-plain")
    p.add_argument("--no-access-log", action="store_true")
    a = p.parse_args()
    host, _, port = a.listen.rpartition(":")
    try:
        setup_schema(a.db, a.pooler)
    except psycopg.Error as e:
        log(level="error", msg=f"setup failed: {e}")
        sys.exit(1)
    app = create_app(a.db, pool_size=a.pool, pooler=a.pooler, bench_routes=a.bench_routes,
                     acquire_timeout=a.acquire_timeout, access_log=not a.no_access_log)
    log(level="info", msg=f"python idempotency demo listening on {host}:{port}")
    uvicorn.run(app, host=host, port=int(port), log_level="warning", access_log=False, lifespan="on")


if __name__ == "__main__":
    main()
