"""The ASGI middleware's OpenTelemetry spans, link and metrics, with the
SDK's InMemorySpanExporter and InMemoryMetricReader (providers handed to the
middleware, nothing global), on a Starlette app under uvicorn in this process,
against the PostgreSQL the PG* variables name: a payment, the same request
again (its "pg_idempotency replay" span links to the first request's span), a
concurrent duplicate (409), a mismatched one (422). Skipped without the SDK."""
from __future__ import annotations

import asyncio
import contextlib
import hashlib
import http.client
import socket
import threading
import time
import uuid

import pytest

pytest.importorskip("opentelemetry.sdk")
import psycopg  # noqa: E402
import uvicorn  # noqa: E402
from opentelemetry.sdk.metrics import MeterProvider  # noqa: E402
from opentelemetry.sdk.metrics.export import InMemoryMetricReader  # noqa: E402
from opentelemetry.sdk.trace import TracerProvider  # noqa: E402
from opentelemetry.sdk.trace.export import SimpleSpanProcessor  # noqa: E402
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter  # noqa: E402
from opentelemetry.trace import SpanKind  # noqa: E402
from starlette.applications import Starlette  # noqa: E402
from starlette.responses import JSONResponse  # noqa: E402
from starlette.routing import Route  # noqa: E402

from pg_idempotency import otel  # noqa: E402
from pg_idempotency.asgi import IdempotencyMiddleware, Options, make_pool  # noqa: E402

DB = "pg_idempotency_python_otel"
exporter = InMemorySpanExporter()
tracer_provider = TracerProvider()
tracer_provider.add_span_processor(SimpleSpanProcessor(exporter))
reader = InMemoryMetricReader()
meter_provider = MeterProvider(metric_readers=[reader])
gates: dict[str, tuple[threading.Event, threading.Event]] = {}  # key -> (started, go)


def hash_of(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


async def pay(request):
    g = gates.get(request.headers.get("idempotency-key", ""))
    if g:
        g[0].set()
        await asyncio.get_running_loop().run_in_executor(None, g[1].wait, 30)
    body = await request.json()
    return JSONResponse({"id": 7, **body}, status_code=201)


@pytest.fixture(scope="module")
def base():
    with psycopg.connect("dbname=postgres", autocommit=True) as c:
        c.execute(f"DROP DATABASE IF EXISTS {DB} WITH (FORCE)")
        c.execute(f"CREATE DATABASE {DB}")
    with psycopg.connect(f"dbname={DB}", autocommit=True) as c:
        c.execute("SET client_min_messages = warning")
        c.execute("CREATE EXTENSION pg_idempotency")
    pool = make_pool(f"dbname={DB}", size=4)

    @contextlib.asynccontextmanager
    async def lifespan(_app):
        await pool.open()
        yield
        await pool.close()

    app = Starlette(routes=[Route("/pay", pay, methods=["POST"])], lifespan=lifespan)
    app.add_middleware(IdempotencyMiddleware, pool=pool, routes={("POST", "/pay"): Options(scope=lambda r: "otel")},
                       telemetry=otel.Telemetry(tracer_provider=tracer_provider, meter_provider=meter_provider))
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    for _ in range(500):
        if server.started:
            break
        time.sleep(0.01)
    assert server.started
    yield port
    server.should_exit = True
    thread.join(10)


def post(port: int, key: str, body: str) -> int:
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    c.request("POST", "/pay", body=body, headers={"Content-Type": "application/json", "Idempotency-Key": key})
    status = c.getresponse().status
    c.close()
    return status


def request_spans(count: int):
    for _ in range(500):
        spans = [s for s in exporter.get_finished_spans() if s.kind == SpanKind.SERVER]
        if len(spans) >= count:
            return spans
        time.sleep(0.01)
    pytest.fail(f"expected {count} request spans, got {len(exporter.get_finished_spans())} spans")


def test_claimed_replay_in_progress_mismatch_link_and_metrics(base):
    key, other = f"otel-{uuid.uuid4()}", f"otel-{uuid.uuid4()}"
    assert post(base, key, '{"amount": 1}') == 201
    (first,) = request_spans(1)
    fc = first.get_span_context()
    assert first.attributes["pg_idempotency.outcome"] == "claimed"
    assert first.attributes["pg_idempotency.attempt"] == 1
    assert first.attributes["pg_idempotency.scope"] == "otel"
    assert first.attributes["pg_idempotency.key_hash"] == hash_of(key)
    assert "pg_idempotency.key" not in first.attributes
    with psycopg.connect(f"dbname={DB}") as c:
        stored = c.execute("SELECT trace_context FROM idempotency.keys WHERE scope = 'otel' AND key = %s",
                           (key,)).fetchone()[0]
    assert stored == f"00-{fc.trace_id:032x}-{fc.span_id:016x}-{int(fc.trace_flags):02x}"
    assert fc.trace_flags.sampled

    assert post(base, key, '{ "amount":1 }') == 201  # the same request again: a replay
    started, go = threading.Event(), threading.Event()
    gates[other] = (started, go)
    holder = []
    t = threading.Thread(target=lambda: holder.append(post(base, other, '{"amount": 2}')))
    t.start()
    assert started.wait(30)
    assert post(base, other, '{"amount": 2}') == 409  # a concurrent duplicate
    go.set()
    t.join(30)
    assert holder == [201]
    assert post(base, key, '{"amount": 3}') == 422  # mismatched

    spans = request_spans(5)
    outcomes = sorted(s.attributes.get("pg_idempotency.outcome") for s in spans)
    assert outcomes == sorted(["claimed", "replay", "in_progress", "claimed", "mismatch"])
    replay = next(s for s in spans if s.attributes["pg_idempotency.outcome"] == "replay")
    assert replay.get_span_context().trace_id != fc.trace_id
    age = replay.attributes["pg_idempotency.first_execution.age"]
    assert 0 <= age < 60
    links = [s for s in exporter.get_finished_spans() if s.name == "pg_idempotency replay"]
    assert len(links) == 1
    (link,) = links
    assert link.parent.span_id == replay.get_span_context().span_id
    assert len(link.links) == 1
    assert link.links[0].context.trace_id == fc.trace_id
    assert link.links[0].context.span_id == fc.span_id
    assert link.attributes["pg_idempotency.first_execution.age"] == age
    conflict = next(s for s in spans if s.attributes["pg_idempotency.outcome"] == "in_progress")
    assert conflict.attributes["http.response.status_code"] == 409
    assert conflict.status.is_ok or conflict.status.status_code.name == "UNSET"

    # Database spans under each request's span.
    db = [s for s in exporter.get_finished_spans() if s.kind == SpanKind.CLIENT]
    finish = [s for s in db if s.name == "SELECT idempotency.finish" and s.parent.span_id == fc.span_id]
    assert len(finish) == 1
    assert finish[0].attributes["db.system.name"] == "postgresql"
    assert finish[0].attributes["db.stored_procedure.name"] == "idempotency.finish"
    assert finish[0].attributes["db.namespace"] == DB
    claims = [s for s in db if s.name == "SELECT idempotency.claim"]
    assert len(claims) == 5
    assert any(s.name == "SELECT idempotency.lookup" and s.parent.span_id == replay.get_span_context().span_id
               for s in db)

    # Metrics: the outcomes counted, one duration per request.
    data = reader.get_metrics_data()
    metrics = [m for rm in data.resource_metrics for sm in rm.scope_metrics if sm.scope.name == "pg_idempotency"
               for m in sm.metrics]
    requests = next(m for m in metrics if m.name == "pg_idempotency.requests")
    assert requests.unit == "{request}"

    def count(outcome):
        return sum(p.value for p in requests.data.data_points if p.attributes.get("pg_idempotency.outcome") == outcome)

    assert count("claimed") == 2  # the payment and the held one
    assert count("replay") == 1
    assert count("in_progress") == 1
    assert count("mismatch") == 1
    duration = next(m for m in metrics if m.name == "pg_idempotency.request.duration")
    assert duration.unit == "s"
    assert sum(p.count for p in duration.data.data_points) == 5


def test_without_opentelemetry_nothing_changes():
    assert otel.make_telemetry(False) is None
    assert otel.span_context_of("00-" + "0" * 32 + "-" + "1" * 16 + "-01") is None
    assert otel.span_context_of("garbage") is None
