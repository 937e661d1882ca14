'use strict';
// The Node.js demo service (node server.js) against the real cluster and real
// HTTP: run by scripts/suites/70-node.sh, or by hand with PG* set:
//   cd examples/node && npm ci && node --test test/
const { test, before, after } = require('node:test');
const assert = require('node:assert/strict');
const { spawn } = require('node:child_process');
const net = require('node:net');
const path = require('node:path');
const pg = require('pg');

const DB = process.env.NODE_EXAMPLE_TEST_DB || 'idempotency_node_test';
let server;
let base;
let admin;  // a connection of the test's own to the test database

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));
const run = `${process.pid}-${Date.now()}`;
let n = 0;
const newKey = () => `node-${run}-${n++}`;

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

async function post(key, body, { type = 'application/json' } = {}) {
  const headers = { 'Content-Type': type };
  if (key !== null) headers['Idempotency-Key'] = key;
  const res = await fetch(`${base}/payments`, { method: 'POST', headers, body });
  const bytes = Buffer.from(await res.arrayBuffer());
  return { status: res.status, headers: res.headers, bytes, text: bytes.toString('utf8') };
}

async function count() {
  const res = await fetch(`${base}/payments/count`);
  return (await res.json()).count;
}

async function paymentsWithKey(key) {
  const { rows } = await admin.query('SELECT count(*)::int AS n FROM demo.payments WHERE idempotency_key = $1', [key]);
  return rows[0].n;
}

before(async () => {
  const root = new pg.Client({ database: 'postgres' });
  await root.connect();
  const { rowCount } = await root.query('SELECT 1 FROM pg_database WHERE datname = $1', [DB]);
  if (rowCount === 0) await root.query(`CREATE DATABASE ${DB}`);
  await root.end();

  const port = await freePort();
  base = `http://127.0.0.1:${port}`;
  server = spawn(process.execPath, [path.join(__dirname, '..', 'server.js'), '--listen', `127.0.0.1:${port}`, '--pool', '8'], {
    env: { ...process.env, PGDATABASE: DB },
    stdio: ['ignore', 'ignore', 'inherit'],
  });
  for (let i = 0; i < 200; i++) {
    try {
      await count();
      break;
    } catch {
      if (server.exitCode !== null) throw new Error('node server.js exited');
      await sleep(50);
    }
  }
  admin = new pg.Client({ database: DB });
  await admin.connect();
});

after(async () => {
  if (admin) await admin.end();
  if (server && server.exitCode === null) {
    server.kill('SIGTERM');
    await new Promise((resolve) => server.once('exit', resolve));
  }
});

test('a new key creates one payment: 201 with the payment', async () => {
  const key = newKey();
  const r = await post(key, '{"amount": 4200, "currency": "EUR"}');
  assert.equal(r.status, 201);
  const body = JSON.parse(r.text);
  assert.equal(body.amount, 4200);
  assert.equal(body.currency, 'EUR');
  assert.ok(Number.isInteger(body.id));
  assert.equal(r.headers.get('idempotent-replayed'), null);
  assert.equal(await paymentsWithKey(key), 1);
});

test('a retry replays the stored answer byte for byte with Idempotent-Replayed', async () => {
  const key = newKey();
  const first = await post(key, '{"amount": 100, "currency": "EUR"}');
  // Same request, other key order and white space: the canonical JSON fingerprint matches.
  const again = await post(key, '{ "currency":"EUR",\n "amount":100 }');
  assert.equal(again.status, first.status);
  assert.deepEqual(again.bytes, first.bytes);
  assert.equal(again.headers.get('idempotent-replayed'), 'true');
  assert.equal(again.headers.get('content-type'), first.headers.get('content-type'));
  assert.equal(await paymentsWithKey(key), 1);
});

test('concurrent duplicates create one payment; the others get 409 with Retry-After or the replay', async () => {
  const key = newKey();
  const answers = await Promise.all(
    Array.from({ length: 8 }, () => post(key, '{"amount": 7, "currency": "EUR", "delay_ms": 500}')));
  const created = answers.filter((a) => a.status === 201 && !a.headers.get('idempotent-replayed'));
  const conflicts = answers.filter((a) => a.status === 409);
  assert.equal(created.length, 1);
  assert.ok(conflicts.length >= 1);
  for (const c of conflicts) {
    assert.ok(Number(c.headers.get('retry-after')) >= 1);
    assert.equal(JSON.parse(c.text).error, 'request_in_progress');
  }
  for (const a of answers) assert.ok(a.status === 201 || a.status === 409, `status ${a.status}`);
  assert.equal(await paymentsWithKey(key), 1);
});

test('same key with another body: 422', async () => {
  const key = newKey();
  assert.equal((await post(key, '{"amount": 1, "currency": "EUR"}')).status, 201);
  const r = await post(key, '{"amount": 2, "currency": "EUR"}');
  assert.equal(r.status, 422);
  assert.deepEqual(JSON.parse(r.text), {
    error: 'idempotency_key_reused',
    message: 'this Idempotency-Key was already used with a different request; use a new key',
  });
  assert.equal(await paymentsWithKey(key), 1);
});

test('no key, an over-long key, malformed JSON, a bad body: 400, and nothing is stored', async () => {
  const before = await count();
  const none = await post(null, '{"amount": 1, "currency": "EUR"}');
  assert.equal(none.status, 400);
  assert.equal(JSON.parse(none.text).error, 'missing_idempotency_key');
  assert.equal((await post('k'.repeat(256), '{"amount": 1, "currency": "EUR"}')).status, 400);
  const key = newKey();
  const malformed = await post(key, '{"amount": ');
  assert.equal(malformed.status, 400);
  assert.equal(JSON.parse(malformed.text).error, 'malformed_json');
  const invalid = await post(key, '{"amount": "many"}');
  assert.equal(invalid.status, 400);
  assert.equal(JSON.parse(invalid.text).error, 'invalid_request');
  assert.equal(await count(), before);
  const { rowCount } = await admin.query("SELECT 1 FROM idempotency.keys WHERE scope = 'payments' AND key = $1", [key]);
  assert.equal(rowCount, 0);
  // The key is still free: the corrected request goes through.
  assert.equal((await post(key, '{"amount": 1, "currency": "EUR"}')).status, 201);
});

test('GET /payments/count with Content-Type: application/json and no body: an empty body is no body', async () => {
  const res = await fetch(`${base}/payments/count`, { headers: { 'Content-Type': 'application/json' } });
  assert.equal(res.status, 200);
  assert.ok(Number.isInteger((await res.json()).count));
  // And a POST whose JSON body is empty: the route's own 400, nothing claimed.
  const key = newKey();
  const empty = await post(key, '');
  assert.equal(empty.status, 400);
  assert.equal(JSON.parse(empty.text).error, 'malformed_json');
  const { rowCount } = await admin.query("SELECT 1 FROM idempotency.keys WHERE scope = 'payments' AND key = $1", [key]);
  assert.equal(rowCount, 0);
});

test('a database connection lost mid-request: 503, nothing stored, the retry creates the payment', async () => {
  const key = newKey();
  const pending = post(key, '{"amount": 9, "currency": "EUR", "delay_ms": 1500}');
  // The handler sleeps inside the transaction that holds the key: terminate that backend.
  let killed = 0;
  for (let i = 0; i < 200 && killed === 0; i++) {
    await sleep(20);
    const { rows } = await admin.query(
      `SELECT pg_terminate_backend(pid, 10000) AS ok FROM pg_stat_activity
        WHERE datname = $1 AND pid <> pg_backend_pid() AND state = 'idle in transaction'`, [DB]);
    killed = rows.filter((r) => r.ok).length;
  }
  assert.equal(killed, 1);
  const lost = await pending;
  assert.equal(lost.status, 503);
  assert.equal(JSON.parse(lost.text).error, 'database_unavailable');
  assert.ok(Number(lost.headers.get('retry-after')) >= 1);
  assert.equal(await paymentsWithKey(key), 0);
  const retry = await post(key, '{"amount": 9, "currency": "EUR"}');
  assert.equal(retry.status, 201);
  assert.equal(retry.headers.get('idempotent-replayed'), null);
  assert.equal(await paymentsWithKey(key), 1);
});

test('idle connections terminated by the server are replaced: the next request succeeds', async () => {
  await post(newKey(), '{"amount": 3, "currency": "EUR"}');
  await admin.query(
    `SELECT pg_terminate_backend(pid, 10000) FROM pg_stat_activity
      WHERE datname = $1 AND pid <> pg_backend_pid() AND backend_type = 'client backend'`, [DB]);
  await sleep(100);  // the pool hears of it on its sockets
  const key = newKey();
  const r = await post(key, '{"amount": 3, "currency": "EUR"}');
  assert.equal(r.status, 201);
  assert.equal(await paymentsWithKey(key), 1);
});
