'use strict';
// The Express middleware on routes of the test's own, in this process, over
// real HTTP, against the real server, as installed from the package: the
// options the demo service does not use (fingerprint of method + path + raw
// bytes, optional key, scope callback, custom header and replayed headers, 5xx
// rolled back), faithful replays (Location, repeated headers, binary bodies),
// an empty body, and backpressure when the pool is exhausted.
const { test, before, after } = require('node:test');
const assert = require('node:assert/strict');
const express = require('express');
const { idempotency, transaction, Rejection } = require('pg-idempotency');
const pg = require('pg');
const { createDatabase, makePool, newKey: makeKey, killIdleInTransaction } = require('./helpers');

const DB = process.env.NODE_MIDDLEWARE_TEST_DB || 'idempotency_node_mw_test';
let pool;
let server;
let base;
let busyPool;  // a pool of two connections, for the backpressure tests
const newKey = () => makeKey('mw');

// One row per run of the route; ?status=N answers N.
async function work(req, res) {
  const tenant = req.get('X-Tenant') ?? '-';
  await req.db.query('INSERT INTO mw_node_work (tenant, key) VALUES ($1, $2)', [tenant, req.idempotency?.key ?? '']);
  res.status(Number(req.query.status ?? 201));
  res.set('Location', `/work/${req.idempotency?.key ?? ''}`);
  res.set('X-Request-Time', String(process.hrtime.bigint()));
  const body = Buffer.from([0x63, 0x00, 0xff, 0x01]);  // raw bytes: NUL and 0xff included
  res.type('application/octet-stream').send(Buffer.concat([body, Buffer.from(String(process.hrtime.bigint()))]));
}

// Holds its request inside the transaction until the test lets it go.
const gates = new Map();
function gate(key) {
  const g = {};
  g.started = new Promise((resolve) => { g.markStarted = resolve; });
  g.released = new Promise((resolve) => { g.go = resolve; });
  gates.set(key, g);
  return g;
}
async function held(req, res) {
  await req.db.query('INSERT INTO mw_node_work (tenant, key) VALUES ($1, $2)', ['-', req.idempotency.key]);
  const g = gates.get(req.idempotency.key);
  if (g) {
    g.markStarted();
    await g.released;
  }
  res.status(201).json({ key: req.idempotency.key });
}

// Repeated headers (two Set-Cookie lines, two Link lines) and a redirect.
async function cookies(req, res) {
  await req.db.query('INSERT INTO mw_node_work (tenant, key) VALUES ($1, $2)', ['-', req.idempotency.key]);
  res.append('Set-Cookie', 'session=abc; Path=/; HttpOnly');
  res.append('Set-Cookie', `seen=${process.hrtime.bigint()}`);
  res.append('Link', '</a>; rel="next"');
  res.append('Link', '</b>; rel="prev"');
  res.location(`/orders/${req.idempotency.key}`);
  res.status(303).send(Buffer.from([0xde, 0xad, 0xbe, 0xef, 0x00]));
}

// A route that answers through Node's own writeHead/write/end.
async function writeHeadRoute(req, res) {
  await req.db.query('INSERT INTO mw_node_work (tenant, key) VALUES ($1, $2)', ['-', req.idempotency.key]);
  res.writeHead(202, { 'Content-Type': 'text/plain', 'X-Route': 'head' });
  res.write('part one, ');
  res.end(`part two ${process.hrtime.bigint()}`);
}

const tenantScope = (req) => {
  const tenant = req.get('X-Tenant');
  if (!tenant) throw new Rejection(401, 'unauthenticated', 'no tenant');
  return `tenant:${tenant}`;
};

async function rows(key) {
  const r = await pool.query('SELECT count(*)::int AS n FROM mw_node_work WHERE key = $1', [key]);
  return r.rows[0].n;
}

async function post(path, { key = null, header = 'Idempotency-Key', body = '{}', type = 'application/json', tenant = 't1' } = {}) {
  const headers = { 'Content-Type': type };
  if (key !== null) headers[header] = key;
  if (tenant !== null) headers['X-Tenant'] = tenant;
  const res = await fetch(`${base}${path}`, { method: 'POST', headers, body });
  return { status: res.status, headers: res.headers, bytes: Buffer.from(await res.arrayBuffer()) };
}

before(async () => {
  await createDatabase(DB);
  pool = makePool(DB, 4);
  busyPool = makePool(DB, 2);
  await pool.query('CREATE TABLE IF NOT EXISTS mw_node_work (tenant text NOT NULL, key text NOT NULL)');

  const app = express();
  app.post('/work', idempotency({ pool, scope: tenantScope }), work);
  app.post('/other', idempotency({ pool, scope: tenantScope }), work);  // same scope, another path
  app.post('/optional', idempotency({ pool, scope: tenantScope, keyRequired: false }), work);
  app.post('/custom', idempotency({ pool, scope: tenantScope, keyHeader: 'X-Request-Id',
    replayHeaders: ['Location', 'Content-Type'] }), work);
  app.post('/plain', transaction({ pool }), work);
  app.get('/count', transaction({ pool }), async (req, res) => {
    const { rows: [r] } = await req.db.query('SELECT count(*)::int AS n FROM mw_node_work');
    res.json({ count: r.n, body: req.body === undefined ? 'none' : typeof req.body });
  });
  app.post('/empty', idempotency({ pool, scope: tenantScope }), work);
  app.post('/held', idempotency({ pool, scope: tenantScope }), held);
  app.post('/cookies', idempotency({ pool, scope: tenantScope }), cookies);
  app.post('/head', idempotency({ pool, scope: tenantScope }), writeHeadRoute);
  app.post('/busy', idempotency({ pool: busyPool, scope: tenantScope, acquireTimeout: 100, retryAfter: 2 }), work);
  app.post('/busy-queue', idempotency({ pool: busyPool, scope: tenantScope, acquireTimeout: 60000, maxWaiting: 0 }), work);
  await new Promise((resolve) => { server = app.listen(0, '127.0.0.1', resolve); });
  base = `http://127.0.0.1:${server.address().port}`;
});

after(async () => {
  await new Promise((resolve) => server.close(resolve));
  await pool.end();
  await busyPool.end();
});

test('replay of raw bytes and stored headers, byte for byte', async () => {
  const key = newKey();
  const first = await post('/work', { key });
  assert.equal(first.status, 201);
  const again = await post('/work', { key });
  assert.equal(again.status, 201);
  assert.deepEqual(again.bytes, first.bytes);
  assert.equal(again.headers.get('idempotent-replayed'), 'true');
  assert.equal(again.headers.get('location'), first.headers.get('location'));
  assert.equal(again.headers.get('x-request-time'), first.headers.get('x-request-time'));
  assert.equal(again.headers.get('content-type'), first.headers.get('content-type'));
  assert.equal(await rows(key), 1);
});

test('fingerprint of method + path + body: canonical JSON, raw bytes otherwise', async () => {
  const key = newKey();
  assert.equal((await post('/work', { key, body: '{"a": 1, "b": [1, 2]}' })).status, 201);
  const reordered = await post('/work', { key, body: '{"b":[1,2],\n"a":1}' });
  assert.equal(reordered.headers.get('idempotent-replayed'), 'true');
  assert.equal((await post('/work', { key, body: '{"a": 2, "b": [1, 2]}' })).status, 422);
  assert.equal((await post('/other', { key, body: '{"a": 1, "b": [1, 2]}' })).status, 422);  // another path
  assert.equal((await post('/work', { key, body: '{"a": 1, "b": [1, 2]}', type: 'text/plain' })).status, 422);
  const raw = newKey();
  const bytes = Buffer.from([0x61, 0x00, 0x62, 0xff]);
  assert.equal((await post('/work', { key: raw, body: bytes, type: 'application/octet-stream' })).status, 201);
  const same = await post('/work', { key: raw, body: bytes, type: 'application/octet-stream' });
  assert.equal(same.headers.get('idempotent-replayed'), 'true');
  const other = await post('/work', { key: raw, body: Buffer.from([0x61, 0x00, 0x63, 0xff]), type: 'application/octet-stream' });
  assert.equal(other.status, 422);
  assert.equal(await rows(key) + await rows(raw), 2);
});

test('the same request fingerprints as the C++ middleware documents it', async () => {
  // ["POST", "/work", <body>] for JSON, {"method", "path", "body_hex"} otherwise (see httplib.hpp).
  const key = newKey();
  const body = '{"x": [true, null]}';
  assert.equal((await post('/work', { key, body })).status, 201);
  const { rows: [r] } = await pool.query(
    `SELECT fingerprint = idempotency.fingerprint('["POST", "/work", {"x": [true, null]}]') AS same
       FROM idempotency.keys WHERE scope = 'tenant:t1' AND key = $1`, [key]);
  assert.equal(r.same, true);
  const raw = newKey();
  assert.equal((await post('/work', { key: raw, body: 'hi', type: 'text/plain' })).status, 201);
  const { rows: [h] } = await pool.query(
    `SELECT fingerprint = idempotency.fingerprint('{"method": "POST", "path": "/work", "body_hex": "6869"}') AS same
       FROM idempotency.keys WHERE scope = 'tenant:t1' AND key = $1`, [raw]);
  assert.equal(h.same, true);
});

test('optional key: without one the route runs in a plain transaction every time', async () => {
  const tenant = `t-${newKey()}`;
  assert.equal((await post('/optional', { tenant })).status, 201);
  assert.equal((await post('/optional', { tenant })).status, 201);
  const r = await pool.query('SELECT count(*)::int AS n FROM mw_node_work WHERE tenant = $1', [tenant]);
  assert.equal(r.rows[0].n, 2);
  const key = newKey();
  assert.equal((await post('/optional', { key, tenant })).status, 201);
  assert.equal((await post('/optional', { key, tenant })).headers.get('idempotent-replayed'), 'true');
  assert.equal(await rows(key), 1);
});

test('scope from a callback: keys never collide across tenants; a Rejection answers', async () => {
  const key = newKey();
  assert.equal((await post('/work', { key, tenant: 'alice' })).status, 201);
  const bob = await post('/work', { key, tenant: 'bob' });
  assert.equal(bob.status, 201);
  assert.equal(bob.headers.get('idempotent-replayed'), null);
  assert.equal(await rows(key), 2);
  const refused = await post('/work', { key: newKey(), tenant: null });
  assert.equal(refused.status, 401);
  assert.equal(JSON.parse(refused.bytes.toString()).error, 'unauthenticated');
});

test('custom key header and replayed header list; missing key 400', async () => {
  const key = newKey();
  assert.equal((await post('/custom', { key })).status, 400);  // Idempotency-Key is not its header
  const first = await post('/custom', { key, header: 'X-Request-Id' });
  assert.equal(first.status, 201);
  const again = await post('/custom', { key, header: 'X-Request-Id' });
  assert.equal(again.headers.get('idempotent-replayed'), 'true');
  assert.equal(again.headers.get('location'), `/work/${key}`);
  assert.equal(again.headers.get('x-request-time'), null);
  assert.deepEqual(again.bytes, first.bytes);
});

test('a 5xx answer rolls the work and the claim back: the retry runs again', async () => {
  const key = newKey();
  assert.equal((await post('/work?status=502', { key })).status, 502);
  assert.equal(await rows(key), 0);
  const { rowCount } = await pool.query("SELECT 1 FROM idempotency.keys WHERE scope = 'tenant:t1' AND key = $1", [key]);
  assert.equal(rowCount, 0);
  const retry = await post('/work', { key });
  assert.equal(retry.status, 201);
  assert.equal(retry.headers.get('idempotent-replayed'), null);
  assert.equal(await rows(key), 1);
});

test('a plain transaction route (no key at all)', async () => {
  assert.equal((await post('/plain', { key: newKey() })).status, 201);
});

async function send(method, path, { key = null, type = null, body = undefined, tenant = 't1' } = {}) {
  const headers = {};
  if (type !== null) headers['Content-Type'] = type;
  if (key !== null) headers['Idempotency-Key'] = key;
  if (tenant !== null) headers['X-Tenant'] = tenant;
  const res = await fetch(`${base}${path}`, { method, headers, body, redirect: 'manual' });
  return { status: res.status, headers: res.headers, bytes: Buffer.from(await res.arrayBuffer()) };
}

test('an empty body is no body, whatever its Content-Type', async () => {
  // GET with Content-Type: application/json and no body (the case that answered 400 malformed_json).
  const count = await send('GET', '/count', { type: 'application/json' });
  assert.equal(count.status, 200, count.bytes.toString());
  assert.equal(JSON.parse(count.bytes.toString()).body, 'none');
  // An empty POST with a key and a JSON Content-Type: fingerprinted as no body, replayed as such.
  const key = newKey();
  assert.equal((await send('POST', '/empty', { key, type: 'application/json', body: '' })).status, 201);
  const again = await send('POST', '/empty', { key, type: 'application/json' });
  assert.equal(again.headers.get('idempotent-replayed'), 'true');
  const { rows: [r] } = await pool.query(
    `SELECT fingerprint = idempotency.fingerprint('{"method": "POST", "path": "/empty", "body_hex": ""}') AS same
       FROM idempotency.keys WHERE scope = 'tenant:t1' AND key = $1`, [key]);
  assert.equal(r.same, true);
  // Same key with a body now: another request.
  assert.equal((await send('POST', '/empty', { key, type: 'application/json', body: '{}' })).status, 422);
  assert.equal(await rows(key), 1);
  // A body that is not JSON under a JSON Content-Type is still refused.
  const bad = await send('POST', '/empty', { key: newKey(), type: 'application/json', body: '{' });
  assert.equal(bad.status, 400);
  assert.equal(JSON.parse(bad.bytes.toString()).error, 'malformed_json');
});

test('faithful replay: status, Location, repeated Set-Cookie and Link lines, binary body', async () => {
  const key = newKey();
  const first = await send('POST', '/cookies', { key });
  assert.equal(first.status, 303);
  const again = await send('POST', '/cookies', { key });
  assert.equal(again.status, 303);
  assert.equal(again.headers.get('idempotent-replayed'), 'true');
  assert.deepEqual(again.bytes, Buffer.from([0xde, 0xad, 0xbe, 0xef, 0x00]));
  assert.deepEqual(again.bytes, first.bytes);
  assert.equal(again.headers.get('location'), `/orders/${key}`);
  assert.deepEqual(again.headers.getSetCookie(), first.headers.getSetCookie());
  assert.equal(again.headers.getSetCookie().length, 2);
  assert.equal(again.headers.get('link'), '</a>; rel="next", </b>; rel="prev"');
  const { rows: [h] } = await pool.query(
    "SELECT response_headers->'Set-Cookie' AS cookies FROM idempotency.keys WHERE scope = 'tenant:t1' AND key = $1", [key]);
  assert.equal(h.cookies.length, 2);  // stored as an array: one header line each
  assert.equal(await rows(key), 1);
});

test('a route answering with writeHead, write and end is held, stored and replayed', async () => {
  const key = newKey();
  const first = await send('POST', '/head', { key });
  assert.equal(first.status, 202);
  assert.equal(first.headers.get('x-route'), 'head');
  assert.match(first.bytes.toString(), /^part one, part two \d+$/);
  const again = await send('POST', '/head', { key });
  assert.equal(again.status, 202);
  assert.equal(again.headers.get('idempotent-replayed'), 'true');
  assert.equal(again.headers.get('x-route'), 'head');
  assert.deepEqual(again.bytes, first.bytes);
});

test('backpressure: every pool connection in use, a bounded wait, then 503 with Retry-After; then it serves', async () => {
  const held = [await busyPool.connect(), await busyPool.connect()];
  try {
    const key = newKey();
    const timedOut = await send('POST', '/busy', { key });
    assert.equal(timedOut.status, 503);
    assert.equal(timedOut.headers.get('retry-after'), '2');
    assert.equal(JSON.parse(timedOut.bytes.toString()).error, 'database_busy');
    const refused = await send('POST', '/busy-queue', { key });  // no queue allowed at all: at once
    assert.equal(refused.status, 503);
    assert.equal(refused.headers.get('retry-after'), '1');
    assert.equal(await rows(key), 0);
  } finally {
    for (const c of held) c.release();
  }
  // The request that gave up handed its connection back: the pool serves again, nothing leaked.
  const key = newKey();
  assert.equal((await send('POST', '/busy', { key })).status, 201);
  assert.equal((await send('POST', '/busy', { key })).headers.get('idempotent-replayed'), 'true');
  assert.equal((await send('POST', '/busy-queue', { key: newKey() })).status, 201);
  assert.equal(busyPool.waitingCount, 0);
  assert.equal(await rows(key), 1);
});

test('a duplicate while the first is in flight: 409 with Retry-After; afterwards the replay', async () => {
  const key = newKey();
  const g = gate(key);
  const first = send('POST', '/held', { key });
  await g.started;  // claimed, inserted, still inside its transaction
  const dup = await send('POST', '/held', { key });
  assert.equal(dup.status, 409);
  assert.ok(Number(dup.headers.get('retry-after')) >= 1);
  assert.equal(JSON.parse(dup.bytes.toString()).error, 'request_in_progress');
  g.go();
  assert.equal((await first).status, 201);
  const again = await send('POST', '/held', { key });
  assert.equal(again.headers.get('idempotent-replayed'), 'true');
  assert.equal(await rows(key), 1);
});

test('the backend killed while the route holds the key: 503 with Retry-After, nothing stored, the retry runs', async () => {
  const key = newKey();
  const g = gate(key);
  const first = send('POST', '/held', { key });
  await g.started;
  const admin = new pg.Client({ database: DB });
  await admin.connect();
  try {
    assert.equal(await killIdleInTransaction(admin, DB), 1);
  } finally {
    await admin.end();
  }
  g.go();  // the route answers; storing it finds the connection gone
  const lost = await first;
  assert.equal(lost.status, 503);
  assert.equal(JSON.parse(lost.bytes.toString()).error, 'database_unavailable');
  assert.ok(Number(lost.headers.get('retry-after')) >= 1);
  assert.equal(await rows(key), 0);
  gates.delete(key);
  const retry = await send('POST', '/held', { key });
  assert.equal(retry.status, 201);
  assert.equal(retry.headers.get('idempotent-replayed'), null);
  assert.equal(await rows(key), 1);
});
