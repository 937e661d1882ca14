'use strict';
// The demo service's logs and console spans (telemetry.js) against the real
// cluster and real HTTP: node server.js with OTEL_TRACES_EXPORTER=console and
// the SDK installed (the optional dependencies), its stdout read line by
// line. Every line is one JSON object; a request's line carries its trace_id;
// the spans printed show the payment, its replay linked to the first
// request's span, and the database spans. Run by scripts/suites/70-node.sh.
const { test, before } = require('node:test');
const assert = require('node:assert/strict');
const { spawn } = require('node:child_process');
const crypto = require('node:crypto');
const net = require('node:net');
const path = require('node:path');
const pg = require('pg');

const DB = process.env.NODE_EXAMPLE_TEST_DB || 'idempotency_node_test';
const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));
const sha256 = (s) => crypto.createHash('sha256').update(s, 'utf8').digest('hex');

function freePort() {
  return new Promise((resolve, reject) => {
    const s = net.createServer();
    s.on('error', reject);
    s.listen(0, '127.0.0.1', () => {
      const { port } = s.address();
      s.close(() => resolve(port));
    });
  });
}

// Starts node server.js with extra environment; resolves to { base, proc } once it answers.
async function start(env, ...args) {
  const port = await freePort();
  const proc = spawn(process.execPath, [path.join(__dirname, '..', 'server.js'), '--listen', `127.0.0.1:${port}`, '--pool', '4', ...args], {
    env: { ...process.env, PGDATABASE: DB, ...env },
    stdio: ['ignore', 'pipe', 'inherit'],
  });
  const out = [];
  let rest = '';
  proc.stdout.on('data', (chunk) => {
    const parts = (rest + chunk.toString('utf8')).split('\n');
    rest = parts.pop();
    out.push(...parts);
  });
  const base = `http://127.0.0.1:${port}`;
  for (let i = 0; i < 200; i++) {
    try {
      await fetch(`${base}/payments/count`);
      return { base, proc, out };
    } catch {
      if (proc.exitCode !== null) throw new Error('node server.js exited');
      await sleep(50);
    }
  }
  throw new Error('node server.js did not answer');
}

async function stop(proc) {
  if (proc.exitCode === null) {
    proc.kill('SIGTERM');
    await new Promise((resolve) => proc.once('exit', resolve));
  }
}

async function post(base, key, body, headers = {}) {
  const res = await fetch(`${base}/payments`, {
    method: 'POST', headers: { 'Content-Type': 'application/json', 'Idempotency-Key': key, ...headers }, body,
  });
  await res.arrayBuffer();
  return res.status;
}

// The parsed lines that match, once there are at least `count` (a line is
// written when the response has gone out, a span when it ends).
async function linesWhere(out, match, count) {
  let found = [];
  for (let i = 0; i < 400; i++) {
    found = out.map((l) => JSON.parse(l)).filter(match);
    if (found.length >= count) return found;
    await sleep(25);
  }
  return assert.fail(`${found.length} of ${count} such lines on stdout:\n${out.join('\n')}`);
}

before(async () => {
  const root = new pg.Client({ database: 'postgres' });
  await root.connect();
  const { rowCount } = await root.query('SELECT 1 FROM pg_database WHERE datname = $1', [DB]);
  if (rowCount === 0) await root.query(`CREATE DATABASE ${DB}`);
  await root.end();
});


test('OTEL_TRACES_EXPORTER=console: spans on stdout, the replay linked to the request that did the work', async () => {
  const { base, proc, out } = await start({ OTEL_TRACES_EXPORTER: 'console', OTEL_SERVICE_NAME: 'payments-demo' });
  try {
    const key = `node-otel-${process.pid}-${Date.now()}`;
    assert.equal(await post(base, key, '{"amount": 12, "currency": "EUR"}'), 201);
    assert.equal(await post(base, key, '{"currency": "EUR", "amount": 12}'), 201);  // the retry: a replay
    assert.equal(await post(base, key, '{"amount": 13, "currency": "EUR"}'), 422);  // mismatched
    const requests = await linesWhere(out, (l) => l.msg === 'request' && l.key_hash === sha256(key), 3);
    assert.equal(requests.length, 3);
    const [first, replay, mismatch] = requests;
    assert.deepEqual([first.replayed, replay.replayed, mismatch.status], [false, true, 422]);
    for (const l of requests) assert.match(l.trace_id, /^[0-9a-f]{32}$/);
    assert.equal(new Set(requests.map((l) => l.trace_id)).size, 3);  // one trace per request

    // Per request: the server span, the middleware's, claim; finish (first),
    // lookup and the link (replay): 11.
    const spans = await linesWhere(out, (l) => l.span !== undefined, 11);
    const server = (traceId) => spans.find((s) => s.trace_id === traceId && s.kind === 1 && s.parent_span_id === undefined);
    const firstSpan = server(first.trace_id);
    assert.ok(firstSpan, 'the first request has a server span');
    assert.equal(firstSpan.service, 'payments-demo');
    assert.equal(firstSpan.attributes['http.response.status_code'], 201);
    const outcome = (traceId) => spans.find((s) => s.trace_id === traceId && s.attributes['pg_idempotency.outcome']
      && s.span.startsWith('pg_idempotency POST'));
    assert.equal(outcome(first.trace_id).attributes['pg_idempotency.outcome'], 'claimed');
    assert.equal(outcome(replay.trace_id).attributes['pg_idempotency.outcome'], 'replay');
    assert.equal(outcome(mismatch.trace_id).attributes['pg_idempotency.outcome'], 'mismatch');
    const link = spans.find((s) => s.trace_id === replay.trace_id && s.span === 'pg_idempotency replay');
    assert.deepEqual(link.links, [{ trace_id: first.trace_id, span_id: firstSpan.span_id }]);
    assert.ok(spans.some((s) => s.trace_id === first.trace_id && s.span === 'SELECT idempotency.finish'
      && s.attributes['db.system.name'] === 'postgresql'));
    for (const l of out) assert.equal(typeof JSON.parse(l), 'object');  // every line one JSON object
  } finally {
    await stop(proc);
  }
});

test('without an exporter: no spans printed, log lines carry the caller\'s trace id or a new one', async () => {
  const { base, proc, out } = await start({ OTEL_TRACES_EXPORTER: '' });
  try {
    const key = `node-log-${process.pid}-${Date.now()}`;
    const traceId = crypto.randomBytes(16).toString('hex');
    assert.equal(await post(base, key, '{"amount": 1, "currency": "EUR"}',
      { traceparent: `00-${traceId}-${crypto.randomBytes(8).toString('hex')}-01` }), 201);
    assert.equal(await post(base, key, '{"amount": 1, "currency": "EUR"}'), 201);
    const [traced, fresh] = await linesWhere(out, (l) => l.msg === 'request' && l.key_hash === sha256(key), 2);
    assert.equal(traced.trace_id, traceId);
    assert.match(fresh.trace_id, /^[0-9a-f]{32}$/);
    assert.notEqual(fresh.trace_id, traceId);
    assert.equal(out.map((l) => JSON.parse(l)).filter((l) => l.span !== undefined).length, 0);
    const started = JSON.parse(out[0]);
    assert.match(started.msg, /listening/);
    assert.match(started.telemetry, /^api/);
  } finally {
    await stop(proc);
  }
});
