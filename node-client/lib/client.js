'use strict';
// The plain API on node-postgres: claim, finish, checkpoint, release, lookup,
// fingerprint, sweep, and the two forms that hold a key for one transaction,
// execute() and once().
//
// `db` is a pg.Client, a client checked out of a pg.Pool, or a pg.Pool.
// The single calls run where they are sent: inside the caller's transaction if
// one is open on the client (a rollback undoes them), in a transaction of
// their own otherwise (a pool's query). execute() and once() follow the C++
// client's rules: BEGIN ... COMMIT of their own on an idle connection (a pool
// lends them one), a savepoint inside the caller's open transaction.
//
// Every statement is unnamed (parsed on each call, no server-side state), so
// everything works through a transaction-mode pooler such as PgBouncer. Every
// name is schema-qualified.

const { IdempotencyError, isConnectionLost, fromPg } = require('./errors');
const sql = require('./sql');

const OUTCOMES = new Set(['claimed', 'replay', 'in_progress', 'mismatch']);
const SAVEPOINT = 'idempotency_execute';

// A pg.Pool (lends connections) rather than a client.
function isPool(db) {
  return db != null && typeof db.connect === 'function' && typeof db.totalCount === 'number' &&
    typeof db.release !== 'function';
}

// ttl, lease, wait: milliseconds (a number) or PostgreSQL interval text ('24 hours').
function interval(value, name) {
  if (value === undefined || value === null) return null;
  if (typeof value === 'number' && Number.isFinite(value)) return `${value} milliseconds`;
  if (typeof value === 'string') return value;
  throw new IdempotencyError('22023', `idempotency: ${name} must be milliseconds or interval text, not ${typeof value}`);
}

function tokenParam(token) {
  if (token === undefined || token === null) return null;  // the server answers 22004
  return String(token);
}

function bodyParam(body) {
  if (body === undefined || body === null) return null;
  if (Buffer.isBuffer(body)) return body;
  if (body instanceof Uint8Array) return Buffer.from(body.buffer, body.byteOffset, body.byteLength);
  return Buffer.from(String(body), 'utf8');
}

function headersParam(headers) {
  if (headers === undefined || headers === null) return null;
  if (typeof headers === 'string') return headers;  // JSON text already
  return Object.keys(headers).length ? JSON.stringify(headers) : null;
}

async function run(db, text, values, what) {
  try {
    return await db.query({ text, values });
  } catch (err) {
    throw fromPg(err, what);
  }
}

function storedResponse(status, headers, body) {
  if (status === null || status === undefined) return null;
  return { status, headers: headers ?? null, body: body ?? Buffer.alloc(0) };
}

function claimResult(row) {
  if (!row || !OUTCOMES.has(row.outcome)) {
    throw new IdempotencyError('XX000', `idempotency: claim answered ${row ? row.outcome : 'nothing'} (extension version mismatch?)`);
  }
  return {
    outcome: row.outcome,
    token: row.token === null ? null : BigInt(row.token),
    attempt: row.attempt,
    recoveryPoint: row.recovery_point,
    response: storedResponse(row.response_status, row.response_headers, row.response_body),
    expiresAt: row.expires_at,
    lockedUntil: row.locked_until,
  };
}

// options.fingerprint: the digest (Buffer, at most 64 bytes); options.request:
// a JSON document (text or a value) whose idempotency.fingerprint() is taken;
// options.traceContext: a W3C traceparent to store with the key (extension 1.2;
// result.traceContext is then the stored one on a replay or in_progress).
async function claim(db, scope, key, options = {}) {
  const times = [interval(options.ttl, 'ttl'), interval(options.lease, 'lease'), interval(options.wait, 'wait') ?? '0'];
  const traced = options.traceContext !== undefined;
  if (traced) times.push(options.traceContext);
  const { rows } = options.request !== undefined && options.request !== null
    ? await run(db, traced ? sql.CLAIM_REQUEST_TRACED : sql.CLAIM_REQUEST, [scope, key, typeof options.request === 'string'
      ? options.request : JSON.stringify(options.request), ...times], 'claim')
    : await run(db, traced ? sql.CLAIM_TRACED : sql.CLAIM, [scope, key, bodyParam(options.fingerprint), ...times], 'claim');
  const r = claimResult(rows[0]);
  if (traced) r.traceContext = rows[0].trace_context ?? null;
  return r;
}

// response: { status, body?: Buffer | string, headers?: object }
async function finish(db, scope, key, token, response) {
  if (!response || typeof response !== 'object') {
    throw new IdempotencyError('22004', 'idempotency: finish needs a response { status, body, headers }');
  }
  const { rows } = await run(db, sql.FINISH, [scope, key, tokenParam(token), response.status ?? null,
    bodyParam(response.body), headersParam(response.headers)], 'finish');
  return rows[0].finished;
}

async function checkpoint(db, scope, key, token, recoveryPoint, options = {}) {
  const { rows } = await run(db, sql.CHECKPOINT,
    [scope, key, tokenParam(token), recoveryPoint ?? null, interval(options.lease, 'lease')], 'checkpoint');
  return rows[0].locked_until;
}

async function release(db, scope, key, token) {
  const { rows } = await run(db, sql.RELEASE, [scope, key, tokenParam(token)], 'release');
  return rows[0].released;
}

async function lookup(db, scope, key) {
  const { rows: [k] } = await run(db, sql.LOOKUP, [scope, key], 'lookup');
  if (!k || k.scope === null) return null;  // absent or expired
  return {
    scope: k.scope,
    key: k.key,
    fingerprint: k.fingerprint,
    state: k.state,
    token: k.token === null ? null : BigInt(k.token),
    attempt: k.attempt,
    recoveryPoint: k.recovery_point,
    lockedUntil: k.locked_until,
    createdAt: k.created_at,
    completedAt: k.completed_at,
    expiresAt: k.expires_at,
    response: storedResponse(k.response_status, k.response_headers, k.response_body),
  };
}

async function fingerprint(db, request) {
  const text = typeof request === 'string' ? request : JSON.stringify(request);
  const { rows } = await run(db, sql.FINGERPRINT, [text], 'fingerprint');
  return rows[0].fingerprint;
}

async function sweep(db, batchSize = null) {
  const { rows } = await run(db, sql.SWEEP, [batchSize], 'sweep');
  return rows[0].swept === null ? 0 : Number(rows[0].swept);
}

// ---- one transaction that holds the key ------------------------------------

// node-postgres's view of the connection: 'I' idle, 'T' in a transaction,
// 'E' in a failed transaction (pg >= 8.21; older ones keep no such state).
function transactionStatus(client) {
  if (typeof client.getTransactionStatus === 'function') return client.getTransactionStatus();
  return client._txStatus ?? null;
}

// Whether execute()/once() own the transaction (BEGIN ... COMMIT) or join the
// caller's under a savepoint. options.transaction ('own' | 'savepoint') says
// it outright, for a node-postgres that does not report the connection's state.
function ownsTransaction(client, options, what) {
  if (options.transaction === 'own') return true;
  if (options.transaction === 'savepoint') return false;
  switch (transactionStatus(client)) {
    case 'I': return true;
    case 'T': return false;
    case 'E':
      throw new IdempotencyError('25P02', `idempotency: ${what} on a connection whose transaction has failed; roll it back first`);
    default:
      throw new IdempotencyError('08003', `idempotency: ${what} cannot tell whether the connection is in a ` +
        'transaction (not connected, or pg older than 8.21); pass { transaction: "own" } or "savepoint"');
  }
}

async function begin(client, own) {
  await run(client, own ? 'BEGIN' : `SAVEPOINT ${SAVEPOINT}`, [], own ? 'BEGIN' : 'SAVEPOINT');
}

async function end(client, own) {
  const r = await run(client, own ? 'COMMIT' : `RELEASE SAVEPOINT ${SAVEPOINT}`, [], own ? 'COMMIT' : 'RELEASE SAVEPOINT');
  if (own && r.command === 'ROLLBACK') {
    throw new IdempotencyError('25P02', 'idempotency: the transaction had failed and was rolled back at COMMIT');
  }
}

// Best effort: undo what begin() started; the original error is what the caller sees.
async function undo(client, own) {
  try {
    if (own) {
      await client.query('ROLLBACK');
    } else {
      await client.query(`ROLLBACK TO SAVEPOINT ${SAVEPOINT}`);
      await client.query(`RELEASE SAVEPOINT ${SAVEPOINT}`);
    }
  } catch {
    // the connection is gone or the transaction is beyond saving: the caller's error says why
  }
}

// fn(client) with a client: db itself, or one lent by the pool (closed rather
// than given back when its connection was lost).
async function withClient(db, fn) {
  if (!isPool(db)) return fn(db);
  let client;
  try {
    client = await db.connect();
  } catch (err) {
    throw fromPg(err, 'connect');
  }
  const lost = () => {};  // a backend that dies while lent must not crash the process
  client.on('error', lost);
  let broken = false;
  try {
    return await fn(client);
  } catch (err) {
    broken = isConnectionLost(err);
    throw err;
  } finally {
    client.removeListener('error', lost);
    client.release(broken || undefined);
  }
}

function normalizeResponse(resp) {
  if (!resp || typeof resp !== 'object' || !Number.isInteger(resp.status)) {
    throw new IdempotencyError('22004', 'idempotency: the execute() handler must return { status, body?, headers? }');
  }
  return { status: resp.status, headers: resp.headers ?? null, body: bodyParam(resp.body) ?? Buffer.alloc(0) };
}

// claim -> handler(client, claim) -> finish, in one transaction: the handler's
// writes commit with the key or not at all. Returns the claim's result; when
// the handler ran, result.response is what it returned (and what was stored).
// A throwing handler rolls everything back and its error reaches the caller.
async function execute(db, scope, key, handler, options = {}) {
  return withClient(db, async (client) => {
    const own = ownsTransaction(client, options, 'execute()');
    await begin(client, own);
    try {
      const r = await claim(client, scope, key, options);
      if (r.outcome !== 'claimed') {
        await end(client, own);
        return r;
      }
      const response = normalizeResponse(await handler(client, r));
      await finish(client, scope, key, r.token, response);
      await end(client, own);
      r.response = response;
      return r;
    } catch (err) {
      if (!isConnectionLost(err)) await undo(client, own);
      throw err;
    }
  });
}

// For consumers: true when this transaction is the first to process the key
// (handler(client) ran, its writes commit with the key), false when the key
// was already processed. Another transaction holding the key past
// options.wait: IdempotencyError 55P03 (do not acknowledge the message).
async function once(db, scope, key, handler, options = {}) {
  return withClient(db, async (client) => {
    const own = ownsTransaction(client, options, 'once()');
    await begin(client, own);
    try {
      const { rows } = await run(client, sql.ONCE,
        [scope, key, interval(options.ttl, 'ttl'), interval(options.wait, 'wait') ?? '0'], 'once');
      const first = rows[0].first;
      if (first) await handler(client);
      await end(client, own);
      return first;
    } catch (err) {
      if (!isConnectionLost(err)) await undo(client, own);
      throw err;
    }
  });
}

module.exports = {
  claim, finish, checkpoint, release, lookup, fingerprint, sweep, execute, once, interval, isPool,
};
