'use strict';
// The demo payment service of pg_idempotency in Node.js: the same interface as
// idempotency-demo-server (C++), on Express and node-postgres.
//
//   cd examples/node && npm ci && node server.js --listen 127.0.0.1:8080
//
// The database comes from the standard PG* environment variables (PGHOST,
// PGPORT, PGUSER, PGDATABASE, ...). POST /payments is the business logic alone;
// the Idempotency-Key handling is the pg-idempotency package's middleware
// (node-client/ in this repository). Logs and OpenTelemetry: telemetry.js
// (one JSON object a line with trace_id; OTEL_TRACES_EXPORTER=console prints
// the spans where the SDK is installed; --telemetry off: none at all).
const { log, setupTelemetry, requestLog } = require('./telemetry');
const express = require('express');
const pg = require('pg');
const { idempotency, transaction, reject } = require('pg-idempotency');

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

// The one place that says how the service connects to the database.
function makePool(size) {
  const pool = new pg.Pool({ max: size });
  // An idle connection whose backend went away: the pool drops it and makes a new one later.
  pool.on('error', (err) => log({ level: 'warn', msg: `idle database connection lost: ${err.message}` }));
  return pool;
}

async function setupSchema(pool) {
  const client = await pool.connect();
  try {
    await client.query('SET client_min_messages = warning');
    await client.query('CREATE EXTENSION IF NOT EXISTS pg_idempotency');
    await client.query('CREATE SCHEMA IF NOT EXISTS demo');
    await client.query(`CREATE TABLE IF NOT EXISTS demo.payments (
      id bigserial PRIMARY KEY,
      idempotency_key text NOT NULL,
      amount bigint NOT NULL,
      currency text NOT NULL,
      created_at timestamptz NOT NULL DEFAULT now())`);
  } finally {
    client.release();
  }
}

// POST /payments: validate the body, insert the payment, answer 201. It runs
// in the transaction that holds the key (req.db).
async function createPayment(req, res) {
  const body = req.body;
  if (body === null || typeof body !== 'object' || Array.isArray(body)) {
    return reject(res, 400, 'malformed_json', 'the request body is not a JSON object');
  }
  const { amount, currency, delay_ms: delayMs = 0 } = body;
  if (!Number.isInteger(amount) || typeof currency !== 'string' || !Number.isInteger(delayMs)) {
    return reject(res, 400, 'invalid_request', 'expected {"amount": <int>, "currency": "<str>"}');
  }
  if (delayMs < 0 || delayMs > 60000) return reject(res, 400, 'invalid_request', 'delay_ms must be between 0 and 60000');
  if (delayMs > 0) await sleep(delayMs);
  const { rows } = await req.db.query(
    'INSERT INTO demo.payments (amount, currency, idempotency_key) VALUES ($1, $2, $3) RETURNING id',
    [amount, currency, req.get('Idempotency-Key') ?? '']);
  res.status(201).json({ id: Number(rows[0].id), amount, currency });
}

// GET /payments/count
async function countPayments(req, res) {
  const { rows } = await req.db.query('SELECT count(*) AS n FROM demo.payments');
  res.json({ count: Number(rows[0].n) });
}

function createApp(pool, { benchRoutes = false, log: logRequests = true, telemetry = true } = {}) {
  const app = express();
  app.disable('x-powered-by');
  if (logRequests) app.use(requestLog({ telemetry }));  // one JSON line per request, and its span
  const idem = telemetry ? {} : { telemetry: false };
  // Scope "payments"; fingerprint idempotency.fingerprint(body), as the C++ service.
  app.post('/payments', idempotency({ pool, scope: () => 'payments', fingerprint: 'json-body', ...idem }), createPayment);
  app.get('/payments/count', transaction({ pool }), countPayments);
  // The baseline of bench/http: the same business logic in a plain transaction.
  if (benchRoutes) app.post('/bench/payments-plain', transaction({ pool, fingerprint: 'json-body' }), createPayment);
  return app;
}

function parseArgs(argv) {
  const args = { listen: '127.0.0.1:8080', pool: 32, benchRoutes: false, telemetry: true, log: true };
  for (let i = 0; i < argv.length; i++) {
    if (argv[i] === '--listen' && i + 1 < argv.length) args.listen = argv[++i];
    else if (argv[i] === '--pool' && i + 1 < argv.length) args.pool = Number(argv[++i]);
    else if (argv[i] === '--bench-routes') args.benchRoutes = true;
    else if (argv[i] === '--telemetry' && ['on', 'off'].includes(argv[i + 1])) args.telemetry = argv[++i] === 'on';
    else if (argv[i] === '--no-access-log') args.log = false;
    else {
      console.error('usage: node server.js --listen HOST:PORT [--pool N] [--bench-routes] [--telemetry on|off]'
        + ' [--no-access-log]   (database from PG* variables)');
      process.exit(2);
    }
  }
  return args;
}

async function main() {
  const args = parseArgs(process.argv.slice(2));
  const colon = args.listen.lastIndexOf(':');
  const host = args.listen.slice(0, colon);
  const port = Number(args.listen.slice(colon + 1));
  const telemetry = args.telemetry ? setupTelemetry() : 'off';
  const pool = makePool(args.pool);
  try {
    await setupSchema(pool);
  } catch (err) {
    log({ level: 'error', msg: `node server: setup failed: ${err.message}` });
    process.exit(1);
  }
  const app = createApp(pool, { benchRoutes: args.benchRoutes, telemetry: args.telemetry, log: args.log });
  const server = app.listen(port, host, () => {
    log({ level: 'info', msg: `node idempotency demo listening on ${host}:${port}`, telemetry });
  });
  const stop = () => server.close(() => pool.end().then(() => process.exit(0)));
  process.on('SIGINT', stop);
  process.on('SIGTERM', stop);
}

if (require.main === module) main();

module.exports = { createApp, makePool, setupSchema };
