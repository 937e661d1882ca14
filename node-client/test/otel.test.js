'use strict';
// The middleware's OpenTelemetry spans and metrics, with the SDK's in-memory
// span exporter and a metric reader of the test's own (providers handed to the
// middleware, nothing global): a payment, the same request again, a
// concurrent duplicate, a mismatched one, a missing key, a failing claim and
// a failing route; then the outcomes, the attributes, the database spans
// under each request's span, and the metrics by outcome. Then the link: a
// payment, the same request again (its "pg_idempotency replay" span links to
// the first request's span), a mismatched one.
const { test, before, after } = require('node:test');
const assert = require('node:assert/strict');
const crypto = require('node:crypto');
const express = require('express');
const { BasicTracerProvider, InMemorySpanExporter, SimpleSpanProcessor } = require('@opentelemetry/sdk-trace-base');
const { MeterProvider, MetricReader } = require('@opentelemetry/sdk-metrics');
const { SpanKind, SpanStatusCode } = require('@opentelemetry/api');
const { idempotency } = require('pg-idempotency');
const { createDatabase, makePool, newKey, sleep } = require('./helpers');

const DB = process.env.NODE_OTEL_TEST_DB || 'idempotency_node_otel_test';

class TestReader extends MetricReader {
  async onForceFlush() {}
  async onShutdown() {}
}

let pool;
let server;
let base;
const exporter = new InMemorySpanExporter();
const tracerProvider = new BasicTracerProvider({ spanProcessors: [new SimpleSpanProcessor(exporter)] });
const reader = new TestReader();
const meterProvider = new MeterProvider({ readers: [reader] });
const linkReader = new TestReader();  // the link test's metrics, apart from the first test's
const linkMeterProvider = new MeterProvider({ readers: [linkReader] });
const gates = new Map();  // key -> { started, go }: holds a route in flight

function gate(key) {
  let started;
  let go;
  const g = { started: new Promise((r) => { started = r; }), go: null };
  g.release = new Promise((r) => { go = r; });
  g.markStarted = started;
  g.go = go;
  gates.set(key, g);
  return g;
}

async function pay(req, res) {
  const g = gates.get(req.get('Idempotency-Key'));
  if (g) {
    g.markStarted();
    await g.release;
  }
  if (req.query.fail) return res.status(502).json({ error: 'upstream' });
  const { rows: [r] } = await req.db.query('SELECT 7 AS id');
  res.status(201).json({ id: r.id, ...req.body });
}

async function post(path, key, body, extra = {}) {
  const headers = { 'Content-Type': 'application/json', ...extra };
  if (key !== null) headers['Idempotency-Key'] = key;
  const res = await fetch(`${base}${path}`, { method: 'POST', headers, body });
  await res.arrayBuffer();
  return res.status;
}

// The exported request spans (SERVER), once `count` have ended.
async function requestSpans(count) {
  for (let i = 0; i < 500; i++) {
    const spans = exporter.getFinishedSpans().filter((s) => s.kind === SpanKind.SERVER);
    if (spans.length >= count) return spans;
    await sleep(10);
  }
  assert.fail(`expected ${count} request spans, got ${exporter.getFinishedSpans().length} spans`);
}

const parentOf = (span) => (span.parentSpanContext ?? {}).spanId ?? span.parentSpanId;
const hash = (key) => crypto.createHash('sha256').update(key).digest('hex');

before(async () => {
  await createDatabase(DB);
  pool = makePool(DB, 4);
  const telemetry = { tracerProvider, meterProvider };
  const app = express();
  app.post('/pay', idempotency({ pool, scope: (req) => req.get('X-Scope') ?? 'otel', telemetry }), pay);
  app.post('/raw', idempotency({ pool, scope: () => 'otel-raw', telemetry: { ...telemetry, recordRawKey: true } }), pay);
  app.post('/linked', idempotency({ pool, scope: () => 'otel-linked', telemetry: { tracerProvider, meterProvider: linkMeterProvider } }), pay);
  app.post('/unlinked', idempotency({ pool, scope: () => 'otel-unlinked',
    telemetry: { tracerProvider, meterProvider: linkMeterProvider, storeTraceContext: false } }), pay);
  app.post('/quiet', idempotency({ pool, scope: () => 'otel-quiet', telemetry: false }), pay);
  await new Promise((resolve) => { server = app.listen(0, '127.0.0.1', resolve); });
  base = `http://127.0.0.1:${server.address().port}`;
});

after(async () => {
  await new Promise((resolve) => server.close(resolve));
  await pool.end();
});

test('spans, database spans and metrics for claimed, replay, in_progress, mismatch, rejected and failures', async () => {
  const a = newKey('otel');
  const b = newKey('otel');
  assert.equal(await post('/pay', a, '{"amount": 1}'), 201);
  assert.equal(await post('/pay', a, '{ "amount":1 }'), 201);  // the replay
  const held = gate(b);
  const first = post('/pay', b, '{"amount": 2}');
  await held.started;  // b is claimed and its route is running
  assert.equal(await post('/pay', b, '{"amount": 2}'), 409);
  held.go();
  assert.equal(await first, 201);
  assert.equal(await post('/pay', a, '{"amount": 3}'), 422);
  assert.equal(await post('/pay', null, '{"amount": 4}'), 400);
  assert.equal(await post('/pay', newKey('otel'), '{"amount": 5}', { 'X-Scope': 's'.repeat(300) }), 500);
  assert.equal(await post('/pay?fail=1', newKey('otel'), '{"amount": 6}'), 502);
  assert.equal(await post('/quiet', newKey('otel'), '{"amount": 7}'), 201);

  const spans = (await requestSpans(8)).filter((s) => s.name === 'POST /pay');
  assert.equal(spans.length, 8);  // /quiet has none
  const outcomes = spans.map((s) => s.attributes['pg_idempotency.outcome'] ?? null).sort();
  assert.deepEqual(outcomes, ['claimed', 'claimed', 'in_progress', 'mismatch', 'rejected', 'replay', null, null].sort());
  for (const s of spans) {
    assert.equal(s.name, 'POST /pay');
    assert.equal(s.attributes['http.request.method'], 'POST');
    assert.equal(s.attributes['pg_idempotency.key'], undefined);  // never the raw key unless asked
  }
  const byKey = (key, outcome) => spans.find((s) => s.attributes['pg_idempotency.key_hash'] === hash(key) &&
    s.attributes['pg_idempotency.outcome'] === outcome);
  const claimedA = byKey(a, 'claimed');
  assert.ok(claimedA);
  assert.equal(claimedA.attributes['pg_idempotency.scope'], 'otel');
  assert.equal(claimedA.attributes['pg_idempotency.attempt'], 1);
  assert.equal(claimedA.attributes['http.response.status_code'], 201);
  assert.equal(claimedA.status.code, SpanStatusCode.UNSET);
  for (const outcome of ['replay', 'mismatch']) assert.ok(byKey(a, outcome), outcome);
  const conflict = byKey(b, 'in_progress');
  assert.equal(conflict.attributes['http.response.status_code'], 409);
  assert.equal(conflict.status.code, SpanStatusCode.UNSET);  // a 409 is the client's, not an error
  assert.equal(conflict.attributes['pg_idempotency.attempt'], undefined);

  // Database spans: one claim per keyed request, a finish per stored answer, under the request's span.
  const db = exporter.getFinishedSpans().filter((s) => s.kind === SpanKind.CLIENT);
  const claimsOfA = db.filter((s) => s.name === 'SELECT idempotency.claim' &&
    spans.some((r) => r.spanContext().spanId === parentOf(s) && r.attributes['pg_idempotency.key_hash'] === hash(a)));
  assert.equal(claimsOfA.length, 3);
  const finishA = db.find((s) => s.name === 'SELECT idempotency.finish' && parentOf(s) === claimedA.spanContext().spanId);
  assert.ok(finishA);
  assert.equal(finishA.attributes['db.system.name'], 'postgresql');
  assert.equal(finishA.attributes['db.stored_procedure.name'], 'idempotency.finish');
  assert.equal(finishA.attributes['db.namespace'], DB);
  assert.equal(finishA.spanContext().traceId, claimedA.spanContext().traceId);

  // A claim refused by the server: the SQLSTATE on the database span and the request's.
  const failedClaim = db.find((s) => s.attributes['db.response.status_code'] === '22023');
  assert.ok(failedClaim);
  assert.equal(failedClaim.status.code, SpanStatusCode.ERROR);
  const failedRequest = spans.find((s) => s.spanContext().spanId === parentOf(failedClaim));
  assert.equal(failedRequest.attributes['error.type'], '22023');
  assert.equal(failedRequest.status.code, SpanStatusCode.ERROR);
  // A route's own 502: no outcome, error.type the status.
  const upstream = spans.find((s) => s.attributes['http.response.status_code'] === 502);
  assert.equal(upstream.attributes['error.type'], '502');
  assert.equal(upstream.attributes['pg_idempotency.outcome'], undefined);

  // Metrics: one count and one duration per request, by outcome.
  const { resourceMetrics, errors } = await reader.collect();
  assert.deepEqual(errors, []);
  const metrics = resourceMetrics.scopeMetrics.filter((m) => m.scope.name === 'pg_idempotency').flatMap((m) => m.metrics);
  const requests = metrics.find((m) => m.descriptor.name === 'pg_idempotency.requests');
  assert.equal(requests.descriptor.unit, '{request}');
  const count = (labels) => requests.dataPoints.filter((p) => Object.entries(labels)
    .every(([k, v]) => p.attributes[k] === v)).reduce((sum, p) => sum + p.value, 0);
  assert.equal(count({ 'pg_idempotency.outcome': 'claimed' }), 2);
  assert.equal(count({ 'pg_idempotency.outcome': 'replay' }), 1);
  assert.equal(count({ 'pg_idempotency.outcome': 'in_progress' }), 1);
  assert.equal(count({ 'pg_idempotency.outcome': 'mismatch' }), 1);
  assert.equal(count({ 'pg_idempotency.outcome': 'rejected' }), 1);
  assert.equal(count({ 'error.type': '22023' }), 1);
  assert.equal(count({ 'error.type': '502' }), 1);
  const duration = metrics.find((m) => m.descriptor.name === 'pg_idempotency.request.duration');
  assert.equal(duration.descriptor.unit, 's');
  const durations = duration.dataPoints.reduce((sum, p) => sum + p.value.count, 0);
  assert.equal(durations, 8);
});

test('the raw key only when the application asks for it', async () => {
  exporter.reset();
  const key = newKey('otel');
  assert.equal(await post('/raw', key, '{"amount": 1}'), 201);
  const [span] = await requestSpans(1);
  assert.equal(span.attributes['pg_idempotency.key'], key);
  assert.equal(span.attributes['pg_idempotency.key_hash'], hash(key));
  assert.equal(span.attributes['pg_idempotency.scope'], 'otel-raw');
});

test('a replay links to the span of the request that did the work', async () => {
  exporter.reset();
  const key = newKey('otel');
  assert.equal(await post('/linked', key, '{"amount": 10}'), 201);
  const [first] = await requestSpans(1);
  assert.equal(first.attributes['pg_idempotency.outcome'], 'claimed');
  // The claim stored the first request's traceparent with the key.
  const { rows: [stored] } = await pool.query(
    'SELECT trace_context FROM idempotency.keys WHERE scope = $1 AND key = $2', ['otel-linked', key]);
  const fc = first.spanContext();
  assert.equal(stored.trace_context, `00-${fc.traceId}-${fc.spanId}-01`);

  assert.equal(await post('/linked', key, '{"amount": 10}'), 201);  // the same request again: a replay
  assert.equal(await post('/linked', key, '{"amount": 11}'), 422);  // mismatched
  const spans = await requestSpans(3);
  const replay = spans.find((s) => s.attributes['pg_idempotency.outcome'] === 'replay');
  assert.ok(replay);
  assert.notEqual(replay.spanContext().traceId, fc.traceId);  // a retry of its own, in a trace of its own
  const age = replay.attributes['pg_idempotency.first_execution.age'];
  assert.equal(typeof age, 'number');
  assert.ok(age >= 0 && age < 60, `age ${age}`);
  assert.equal(replay.attributes['pg_idempotency.attempt'], 1);

  const internal = exporter.getFinishedSpans().filter((s) => s.kind === SpanKind.INTERNAL);
  assert.equal(internal.length, 1);  // the replay's only: neither the claim nor the mismatch has one
  const [link] = internal;
  assert.equal(link.name, 'pg_idempotency replay');
  assert.equal(parentOf(link), replay.spanContext().spanId);
  assert.equal(link.spanContext().traceId, replay.spanContext().traceId);
  assert.equal(link.links.length, 1);
  assert.equal(link.links[0].context.traceId, fc.traceId);
  assert.equal(link.links[0].context.spanId, fc.spanId);
  assert.equal(link.attributes['pg_idempotency.outcome'], 'replay');
  assert.equal(link.attributes['pg_idempotency.key_hash'], hash(key));
  assert.equal(link.attributes['pg_idempotency.first_execution.age'], age);
  // The age's lookup() is a database span of the replay.
  assert.ok(exporter.getFinishedSpans().some((s) => s.name === 'SELECT idempotency.lookup' &&
    parentOf(s) === replay.spanContext().spanId));
  const mismatch = spans.find((s) => s.attributes['pg_idempotency.outcome'] === 'mismatch');
  assert.equal(mismatch.attributes['http.response.status_code'], 422);

  const { resourceMetrics, errors } = await linkReader.collect();
  assert.deepEqual(errors, []);
  const requests = resourceMetrics.scopeMetrics.flatMap((m) => m.metrics)
    .find((m) => m.descriptor.name === 'pg_idempotency.requests');
  const count = (outcome) => requests.dataPoints.filter((p) => p.attributes['pg_idempotency.outcome'] === outcome)
    .reduce((sum, p) => sum + p.value, 0);
  assert.equal(count('claimed'), 1);
  assert.equal(count('replay'), 1);
  assert.equal(count('mismatch'), 1);
});

test('storeTraceContext: false stores nothing and a replay has no link (extension 1.0 and 1.1)', async () => {
  exporter.reset();
  const key = newKey('otel');
  assert.equal(await post('/unlinked', key, '{"amount": 12}'), 201);
  assert.equal(await post('/unlinked', key, '{"amount": 12}'), 201);
  const spans = await requestSpans(2);
  assert.deepEqual(spans.map((s) => s.attributes['pg_idempotency.outcome']).sort(), ['claimed', 'replay']);
  const { rows: [stored] } = await pool.query(
    'SELECT trace_context FROM idempotency.keys WHERE scope = $1 AND key = $2', ['otel-unlinked', key]);
  assert.equal(stored.trace_context, null);
  assert.equal(exporter.getFinishedSpans().filter((s) => s.kind === SpanKind.INTERNAL).length, 0);
});
