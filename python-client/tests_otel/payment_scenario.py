"""The payment scenario every middleware's OpenTelemetry test runs (ASGI and
Django alike, as the C++ and Node tests do): a payment, the same request again
(its "pg_idempotency replay" span links to the first request's span), a
concurrent duplicate (409) and a mismatched one (422); then the outcomes, the
link, the database spans and the metrics are checked from the SDK's
in-memory exporter and reader. The server under test runs in this process
and answers POST /pay in scope "otel"; its handler calls hold(key) first."""
from __future__ import annotations

import hashlib
import http.client
import threading
import time
import uuid

import psycopg
import pytest
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind

from pg_idempotency import otel

gates: dict[str, tuple[threading.Event, threading.Event]] = {}  # key -> (started, go)


class InMemoryTelemetry:
    """The SDK's in-memory span exporter and metric reader, and the middleware's
    Telemetry on providers of their own (nothing global)."""

    def __init__(self) -> None:
        self.exporter = InMemorySpanExporter()
        tracer_provider = TracerProvider()
        tracer_provider.add_span_processor(SimpleSpanProcessor(self.exporter))
        self.reader = InMemoryMetricReader()
        self.telemetry = otel.Telemetry(tracer_provider=tracer_provider,
                                        meter_provider=MeterProvider(metric_readers=[self.reader]))


def hold(key: str) -> None:
    """In the handler: when the test holds this key, say so and wait for it."""
    g = gates.get(key)
    if g:
        g[0].set()
        g[1].wait(30)


def hash_of(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def post(port: int, key: str, body: str) -> int:
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    c.request("POST", "/pay", body=body, headers={"Content-Type": "application/json", "Idempotency-Key": key})
    status = c.getresponse().status
    c.close()
    return status


def request_spans(exporter, count: int):
    for _ in range(500):
        spans = [s for s in exporter.get_finished_spans() if s.kind == SpanKind.SERVER]
        if len(spans) >= count:
            return spans
        time.sleep(0.01)
    pytest.fail(f"expected {count} request spans, got {len(exporter.get_finished_spans())} spans")


def run(port: int, db: str, exporter, reader) -> None:
    key, other = f"otel-{uuid.uuid4()}", f"otel-{uuid.uuid4()}"
    assert post(port, key, '{"amount": 1}') == 201
    (first,) = request_spans(exporter, 1)
    fc = first.get_span_context()
    assert first.attributes["pg_idempotency.outcome"] == "claimed"
    assert first.attributes["pg_idempotency.attempt"] == 1
    assert first.attributes["pg_idempotency.scope"] == "otel"
    assert first.attributes["pg_idempotency.key_hash"] == hash_of(key)
    assert "pg_idempotency.key" not in first.attributes
    with psycopg.connect(f"dbname={db}") as c:
        stored = c.execute("SELECT trace_context FROM idempotency.keys WHERE scope = 'otel' AND key = %s",
                           (key,)).fetchone()[0]
    assert stored == f"00-{fc.trace_id:032x}-{fc.span_id:016x}-{int(fc.trace_flags):02x}"
    assert fc.trace_flags.sampled

    assert post(port, key, '{ "amount":1 }') == 201  # the same request again: a replay
    started, go = threading.Event(), threading.Event()
    gates[other] = (started, go)
    holder = []
    t = threading.Thread(target=lambda: holder.append(post(port, other, '{"amount": 2}')))
    t.start()
    assert started.wait(30)
    assert post(port, other, '{"amount": 2}') == 409  # a concurrent duplicate
    go.set()
    t.join(30)
    assert holder == [201]
    assert post(port, key, '{"amount": 3}') == 422  # mismatched

    spans = request_spans(exporter, 5)
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
    db_spans = [s for s in exporter.get_finished_spans() if s.kind == SpanKind.CLIENT]
    finish = [s for s in db_spans if s.name == "SELECT idempotency.finish" and s.parent.span_id == fc.span_id]
    assert len(finish) == 1
    assert finish[0].attributes["db.system.name"] == "postgresql"
    assert finish[0].attributes["db.stored_procedure.name"] == "idempotency.finish"
    assert finish[0].attributes["db.namespace"] == db
    claims = [s for s in db_spans if s.name == "SELECT idempotency.claim"]
    assert len(claims) == 5
    assert any(s.name == "SELECT idempotency.lookup" and s.parent.span_id == replay.get_span_context().span_id
               for s in db_spans)

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


def fresh_database(name: str) -> None:
    with psycopg.connect("dbname=postgres", autocommit=True) as c:
        c.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
        c.execute(f"CREATE DATABASE {name}")
    with psycopg.connect(f"dbname={name}", autocommit=True) as c:
        c.execute("SET client_min_messages = warning")
        c.execute("CREATE EXTENSION pg_idempotency")
