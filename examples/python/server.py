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
runs it inside the transaction that holds the key.

Logs: one JSON object a line, each request's with its trace_id (the request
span's; without one, the incoming traceparent's; otherwise a new one), as the
C++ and Node services. Telemetry (docs/observability.md): the middleware's
OpenTelemetry spans and metrics whenever opentelemetry-api is installed;
with opentelemetry-sdk installed too, the SDK's standard environment
OTEL_TRACES_EXPORTER=console prints every span on stdout (and
OTEL_METRICS_EXPORTER=console the metrics; OTEL_SERVICE_NAME names the
service). --telemetry off: none at all.
"""
from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import re
import sys
import time

import psycopg
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from pg_idempotency import otel
from pg_idempotency.asgi import IdempotencyMiddleware, Options, Reject, make_pool, transaction_options

_TRACEPARENT = re.compile(r"^[0-9a-f]{2}-([0-9a-f]{32})-[0-9a-f]{16}-[0-9a-f]{2}$")


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


def _current_trace_id() -> str | None:
    """The trace id of the active span (the middleware's, while it answers), if any."""
    if not otel.available():
        return None
    from opentelemetry import trace

    sc = trace.get_current_span().get_span_context()
    return f"{sc.trace_id:032x}" if sc.is_valid else None


class AccessLog:
    """One JSON line per request, with its trace_id."""

    def __init__(self, app) -> None:
        self.app = app

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        start = time.monotonic()
        seen = {"status": None, "replayed": False, "trace_id": None}

        async def logged_send(message):
            if message["type"] == "http.response.start":
                seen["status"] = message["status"]
                seen["replayed"] = any(n.lower() == b"idempotent-replayed" for n, _ in message.get("headers", []))
                # Sent from inside the middleware, whose span is the active one here.
                seen["trace_id"] = seen["trace_id"] or _current_trace_id()
            await send(message)

        try:
            await self.app(scope, receive, logged_send)
        finally:
            headers = dict(scope.get("headers", []))
            key = headers.get(b"idempotency-key")
            trace_id = seen["trace_id"]
            if trace_id is None:
                m = _TRACEPARENT.match(headers.get(b"traceparent", b"").decode("latin-1"))
                trace_id = m.group(1) if m and m.group(1) != "0" * 32 else os.urandom(16).hex()
            fields = dict(level="info", msg="request", method=scope["method"], path=scope["path"],
                          status=seen["status"], replayed=seen["replayed"],
                          duration_ms=round((time.monotonic() - start) * 1000, 2), trace_id=trace_id)
            if key is not None:  # the key's hash, never the key (keys can be sensitive)
                fields["key_hash"] = otel.key_hash(key.decode("latin-1"))
            log(**fields)


def setup_telemetry() -> str:
    """The SDK's console exporters when the standard environment asks for
    them and opentelemetry-sdk is installed; returns what is on, for the log."""
    traces = "console" in os.environ.get("OTEL_TRACES_EXPORTER", "").split(",")
    metrics = "console" in os.environ.get("OTEL_METRICS_EXPORTER", "").split(",")
    if not otel.available():
        return "off (no opentelemetry-api)"
    if not traces and not metrics:
        return "api (no exporter asked for)"
    try:
        from opentelemetry import metrics as otel_metrics
        from opentelemetry import trace
        from opentelemetry.sdk.resources import Resource
    except ImportError:
        return "api (no opentelemetry-sdk: OTEL_*_EXPORTER ignored)"
    resource = Resource.create()  # OTEL_SERVICE_NAME, OTEL_RESOURCE_ATTRIBUTES
    if traces:
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import ConsoleSpanExporter, SimpleSpanProcessor

        provider = TracerProvider(resource=resource)
        # One span a line: the exporter's JSON, compacted, so stdout stays line-oriented.
        provider.add_span_processor(SimpleSpanProcessor(ConsoleSpanExporter(
            formatter=lambda span: json.dumps(json.loads(span.to_json()), separators=(",", ":")) + "\n")))
        trace.set_tracer_provider(provider)
    if metrics:
        from opentelemetry.sdk.metrics import MeterProvider
        from opentelemetry.sdk.metrics.export import ConsoleMetricExporter, PeriodicExportingMetricReader

        otel_metrics.set_meter_provider(MeterProvider(resource=resource, metric_readers=[
            PeriodicExportingMetricReader(ConsoleMetricExporter(
                formatter=lambda data: data.to_json(indent=None) + "\n"))]))
    return "sdk (" + ", ".join(n for n, on in (("traces", traces), ("metrics", metrics)) if on) + " on the console)"


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
               acquire_timeout: float = 5.0, access_log: bool = True, telemetry: bool = True):
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
    @contextlib.asynccontextmanager
    async def lifespan(_app):  # (Starlette 1.0 has no on_startup/on_shutdown)
        await pool.open()
        try:
            yield
        finally:
            await pool.close()

    app = Starlette(routes=routes, lifespan=lifespan)
    app.add_middleware(IdempotencyMiddleware, pool=pool, routes=policy, acquire_timeout=acquire_timeout,
                       telemetry=None if telemetry else False)
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
    p.add_argument("--telemetry", choices=["on", "off"], default="on",
                   help="off: no OpenTelemetry at all, even where it is installed")
    a = p.parse_args()
    host, _, port = a.listen.rpartition(":")
    try:
        setup_schema(a.db, a.pooler)
    except psycopg.Error as e:
        log(level="error", msg=f"setup failed: {e}")
        sys.exit(1)
    telemetry = setup_telemetry() if a.telemetry == "on" else "off"
    app = create_app(a.db, pool_size=a.pool, pooler=a.pooler, bench_routes=a.bench_routes,
                     acquire_timeout=a.acquire_timeout, access_log=not a.no_access_log,
                     telemetry=a.telemetry == "on")
    log(level="info", msg=f"python idempotency demo listening on {host}:{port}", telemetry=telemetry)
    uvicorn.run(app, host=host, port=int(port), log_level="warning", access_log=False, lifespan="on")


if __name__ == "__main__":
    main()
