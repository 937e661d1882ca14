'use strict';
// The Express middleware (idempotency.js) on routes of the test's own, in
// this process, over real HTTP, against the real cluster: the options the demo
// service does not use (fingerprint of method + path + raw bytes, optional key,
// scope callback, custom header and replayed headers, 5xx rolled back).
const { test, before, after } = require('node:test');
const assert = require('node:assert/strict');
const express = require('express');
const pg = require('pg');
const { idempotency, transaction, Rejection } = require('../idempotency');

const DB = process.env.NODE_MIDDLEWARE_TEST_DB || 'idempotency_node_mw_test';
let pool;
let server;
let base;
const run = `${process.pid}-${Date.now()}`;
let n = 0;
const newKey = () => `mw-${run}-${n++}`;

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
  const root = new pg.Client({ database: 'postgres' });
  await root.connect();
  const { rowCount } = await root.query('SELECT 1 FROM pg_database WHERE datname = $1', [DB]);
  if (rowCount === 0) await root.query(`CREATE DATABASE ${DB}`);
  await root.end();
  pool = new pg.Pool({ database: DB, max: 4 });
  pool.on('error', () => {});
  await pool.query('SET client_min_messages = warning');
  await pool.query('CREATE EXTENSION IF NOT EXISTS pg_idempotency');
  await pool.query('CREATE TABLE IF NOT EXISTS mw_node_work (tenant text NOT NULL, key text NOT NULL)');

  const app = express();
  app.post('/work', idempotency({ pool, scope: tenantScope }), work);
  app.post('/other', idempotency({ pool, scope: tenantScope }), work);  // same scope, another path
  app.post('/optional', idempotency({ pool, scope: tenantScope, keyRequired: false }), work);
  app.post('/custom', idempotency({ pool, scope: tenantScope, keyHeader: 'X-Request-Id',
    replayHeaders: ['Location', 'Content-Type'] }), work);
  app.post('/plain', transaction({ pool }), work);
  await new Promise((resolve) => { server = app.listen(0, '127.0.0.1', resolve); });
  base = `http://127.0.0.1:${server.address().port}`;
});

after(async () => {
  await new Promise((resolve) => server.close(resolve));
  await pool.end();
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
