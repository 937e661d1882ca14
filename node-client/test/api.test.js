'use strict';
// The plain API (claim, finish, checkpoint, release, lookup, execute, once)
// against the real server, as installed from the package: its transaction
// rules (own transaction on an idle connection, a savepoint inside the
// caller's), SQLSTATEs on errors, concurrent duplicates, a lost backend.
const { test, before, after } = require('node:test');
const assert = require('node:assert/strict');
const pg = require('pg');
const idem = require('pg-idempotency');
const { IdempotencyError } = idem;
const { newKey, sleep, createDatabase, makePool, killIdleInTransaction } = require('./helpers');

const DB = process.env.NODE_API_TEST_DB || 'idempotency_node_api_test';
let pool;
let client;  // a pg.Client of the test's own

async function effects(key) {
  const { rows } = await pool.query('SELECT count(*)::int AS n FROM api_effects WHERE key = $1', [key]);
  return rows[0].n;
}

async function stored(scope, key) {
  const { rows } = await pool.query('SELECT state::text FROM idempotency.keys WHERE scope = $1 AND key = $2', [scope, key]);
  return rows.length ? rows[0].state : null;
}

async function sqlstateOf(promise) {
  try {
    await promise;
  } catch (err) {
    assert.ok(err instanceof IdempotencyError, `an IdempotencyError, not ${err && err.constructor.name}: ${err}`);
    return err.sqlstate;
  }
  assert.fail('expected an error');
}

before(async () => {
  await createDatabase(DB);
  pool = makePool(DB, 6);
  await pool.query('CREATE TABLE IF NOT EXISTS api_effects (key text NOT NULL)');
  client = new pg.Client({ database: DB });
  await client.connect();
});

after(async () => {
  await client.end();
  await pool.end();
});

test('claim, finish and the replay; mismatch on another fingerprint; lookup sees the stored response', async () => {
  const key = newKey();
  const first = await idem.claim(pool, 'api', key, { request: { amount: 1, currency: 'EUR' } });
  assert.equal(first.outcome, 'claimed');
  assert.equal(typeof first.token, 'bigint');
  assert.equal(first.attempt, 1);
  assert.ok(first.expiresAt instanceof Date);
  const body = Buffer.from([0x00, 0xff, 0x10, 0x7b]);
  assert.equal(await idem.finish(pool, 'api', key, first.token,
    { status: 201, body, headers: { Location: '/x/1', 'Set-Cookie': ['a=1', 'b=2'] } }), true);
  assert.equal(await idem.finish(pool, 'api', key, first.token,
    { status: 201, body, headers: { Location: '/x/1', 'Set-Cookie': ['a=1', 'b=2'] } }), false);

  const again = await idem.claim(pool, 'api', key, { request: '{"currency": "EUR",  "amount": 1}' });
  assert.equal(again.outcome, 'replay');
  assert.equal(again.token, null);
  assert.equal(again.response.status, 201);
  assert.deepEqual(again.response.body, body);
  assert.deepEqual(again.response.headers, { Location: '/x/1', 'Set-Cookie': ['a=1', 'b=2'] });
  assert.equal((await idem.claim(pool, 'api', key, { request: { amount: 2, currency: 'EUR' } })).outcome, 'mismatch');

  const k = await idem.lookup(pool, 'api', key);
  assert.equal(k.state, 'completed');
  assert.equal(k.token, first.token);
  assert.deepEqual(k.response.body, body);
  assert.deepEqual(k.fingerprint, await idem.fingerprint(pool, { amount: 1, currency: 'EUR' }));
  assert.equal(await idem.lookup(pool, 'api', newKey()), null);
});

test('a raw fingerprint; in_progress while held; checkpoint, takeover with the recovery point, release', async () => {
  const key = newKey();
  const digest = Buffer.alloc(32, 7);
  const held = await idem.claim(pool, 'api', key, { fingerprint: digest, lease: 60000 });
  assert.equal(held.outcome, 'claimed');
  const busy = await idem.claim(pool, 'api', key, { fingerprint: digest });
  assert.equal(busy.outcome, 'in_progress');
  assert.ok(busy.lockedUntil instanceof Date);
  const until = await idem.checkpoint(pool, 'api', key, held.token, 'step-1', { lease: '1 millisecond' });
  assert.ok(until instanceof Date);
  await sleep(20);  // the lease ran out: the next claim takes the key over
  const takeover = await idem.claim(pool, 'api', key, { fingerprint: digest });
  assert.equal(takeover.outcome, 'claimed');
  assert.equal(takeover.attempt, 2);
  assert.equal(takeover.recoveryPoint, 'step-1');
  assert.equal(await sqlstateOf(idem.finish(pool, 'api', key, held.token, { status: 200 })), 'IK001');
  assert.equal(await idem.release(pool, 'api', key, takeover.token), true);
  assert.equal(await idem.lookup(pool, 'api', key), null);
  assert.equal(await sqlstateOf(idem.release(pool, 'api', key, takeover.token)), 'IK001');
});

test('errors carry the SQLSTATE: IK002, 22023, 22004', async () => {
  const key = newKey();
  const r = await idem.claim(pool, 'api', key);
  await idem.finish(pool, 'api', key, r.token, { status: 200, body: 'one' });
  const e = await idem.finish(pool, 'api', key, r.token, { status: 200, body: 'two' }).catch((err) => err);
  assert.ok(e instanceof IdempotencyError);
  assert.equal(e.sqlstate, 'IK002');
  assert.equal(e.code, 'IK002');
  assert.match(e.message, new RegExp(key));
  assert.equal(await sqlstateOf(idem.claim(pool, 'api', '')), '22023');
  assert.equal(await sqlstateOf(idem.claim(pool, 'api', newKey(), { ttl: -5 })), '22023');
  assert.equal(await sqlstateOf(idem.claim(pool, null, newKey())), '22004');
});

test('execute on a pool: its own transaction; the replay does not run the handler; sweep answers a number', async () => {
  const key = newKey();
  let runs = 0;
  const handler = async (tx, claim) => {
    runs++;
    assert.equal(claim.outcome, 'claimed');
    await tx.query('INSERT INTO api_effects (key) VALUES ($1)', [key]);
    return { status: 201, body: `{"run": ${runs}}`, headers: { 'Content-Type': 'application/json' } };
  };
  const first = await idem.execute(pool, 'api', key, handler, { request: { a: 1 } });
  assert.equal(first.outcome, 'claimed');
  assert.equal(first.response.status, 201);
  const again = await idem.execute(pool, 'api', key, handler, { request: { a: 1 } });
  assert.equal(again.outcome, 'replay');
  assert.equal(again.response.body.toString(), '{"run": 1}');
  assert.deepEqual(again.response.headers, { 'Content-Type': 'application/json' });
  assert.equal(runs, 1);
  assert.equal(await effects(key), 1);
  assert.equal(typeof await idem.sweep(pool, 100), 'number');
});

test('execute: a throwing handler rolls back its work and the claim; its error reaches the caller', async () => {
  const key = newKey();
  const boom = new Error('boom');
  await assert.rejects(idem.execute(pool, 'api', key, async (tx) => {
    await tx.query('INSERT INTO api_effects (key) VALUES ($1)', [key]);
    throw boom;
  }), (err) => err === boom);
  assert.equal(await effects(key), 0);
  assert.equal(await stored('api', key), null);
  const retry = await idem.execute(pool, 'api', key, async () => ({ status: 200 }));
  assert.equal(retry.outcome, 'claimed');
});

test('execute inside the caller\'s transaction: a savepoint; the caller\'s rollback undoes the key too', async () => {
  const key = newKey();
  await client.query('BEGIN');
  await client.query('INSERT INTO api_effects (key) VALUES ($1)', [`${key}-caller`]);
  const r = await idem.execute(client, 'api', key, async (tx) => {
    assert.equal(tx, client);
    await tx.query('INSERT INTO api_effects (key) VALUES ($1)', [key]);
    return { status: 200 };
  });
  assert.equal(r.outcome, 'claimed');
  assert.equal(client.getTransactionStatus(), 'T');  // still the caller's transaction
  // A failing handler rolls back to the savepoint only: the caller's work stays.
  await assert.rejects(idem.execute(client, 'api', newKey(), async (tx) => {
    await tx.query('SELECT 1/0');
  }), (err) => err.code === '22012');
  assert.equal(client.getTransactionStatus(), 'T');
  await client.query('ROLLBACK');
  assert.equal(await stored('api', key), null);
  assert.equal(await effects(key) + await effects(`${key}-caller`), 0);

  await client.query('BEGIN');
  await idem.execute(client, 'api', key, async (tx) => {
    await tx.query('INSERT INTO api_effects (key) VALUES ($1)', [key]);
    return { status: 200 };
  });
  await client.query('COMMIT');
  assert.equal(await stored('api', key), 'completed');
  assert.equal(await effects(key), 1);
});

test('execute and once refuse a failed transaction with 25P02', async () => {
  await client.query('BEGIN');
  await client.query('SELECT 1/0').catch(() => {});
  assert.equal(await sqlstateOf(idem.execute(client, 'api', newKey(), async () => ({ status: 200 }))), '25P02');
  assert.equal(await sqlstateOf(idem.once(client, 'api', newKey(), async () => {})), '25P02');
  await client.query('ROLLBACK');
});

test('once: true and the handler runs once; false afterwards; the caller\'s rollback lets it run again', async () => {
  const key = newKey();
  const handler = async (tx) => { await tx.query('INSERT INTO api_effects (key) VALUES ($1)', [key]); };
  assert.equal(await idem.once(pool, 'messages', key, handler), true);
  assert.equal(await idem.once(pool, 'messages', key, handler), false);
  assert.equal(await effects(key), 1);

  const other = newKey();
  await client.query('BEGIN');
  assert.equal(await idem.once(client, 'messages', other, handler), true);
  await client.query('ROLLBACK');
  assert.equal(await stored('messages', other), null);
  assert.equal(await idem.once(client, 'messages', other, handler), true);
  assert.equal(client.getTransactionStatus(), 'I');
});

test('once while another transaction holds the key: 55P03 after wait, never false', async () => {
  const key = newKey();
  const holder = await pool.connect();
  try {
    await holder.query('BEGIN');
    assert.equal(await idem.once(holder, 'messages', key, async () => {}), true);
    assert.equal(await sqlstateOf(idem.once(pool, 'messages', key, async () => {}, { wait: 50 })), '55P03');
    await holder.query('COMMIT');
  } finally {
    holder.release();
  }
  assert.equal(await idem.once(pool, 'messages', key, async () => {}), false);
});

test('concurrent duplicates through execute: exactly one handler runs', async () => {
  const key = newKey();
  let runs = 0;
  const results = await Promise.all(Array.from({ length: 6 }, () => idem.execute(pool, 'api', key, async (tx) => {
    runs++;
    await tx.query('INSERT INTO api_effects (key) VALUES ($1)', [key]);
    await sleep(200);
    return { status: 201 };
  })));
  const outcomes = results.map((r) => r.outcome);
  assert.equal(outcomes.filter((o) => o === 'claimed').length, 1);
  for (const o of outcomes) assert.ok(o === 'claimed' || o === 'in_progress' || o === 'replay', o);
  assert.equal(runs, 1);
  assert.equal(await effects(key), 1);
});

test('a backend killed while the key is held: finish fails with 08006, nothing stored, the pool replaces the connection, the retry runs', async () => {
  const key = newKey();
  const admin = new pg.Client({ database: DB });
  await admin.connect();
  try {
    let inHandler;
    const handlerRan = new Promise((resolve) => { inHandler = resolve; });
    const pending = idem.execute(pool, 'api', key, async (tx) => {
      await tx.query('INSERT INTO api_effects (key) VALUES ($1)', [key]);
      inHandler();
      await sleep(1500);  // killed meanwhile: finish() finds the connection gone
      return { status: 201 };
    }).catch((err) => err);
    await handlerRan;  // the claim and the insert are done; the backend idles in the transaction
    assert.equal(await killIdleInTransaction(admin, DB), 1);
    const err = await pending;
    assert.ok(err instanceof IdempotencyError, String(err));
    assert.equal(err.sqlstate, '08006');
    assert.equal(err.connectionError, true);
  } finally {
    await admin.end();
  }
  assert.equal(await effects(key), 0);
  assert.equal(await stored('api', key), null);
  const retry = await idem.execute(pool, 'api', key, async (tx) => {
    await tx.query('INSERT INTO api_effects (key) VALUES ($1)', [key]);
    return { status: 201 };
  });
  assert.equal(retry.outcome, 'claimed');
  assert.equal(await effects(key), 1);
});
