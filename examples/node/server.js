'use strict';
// The demo payment service of pg_idempotency in Node.js: the same interface as
// idempotency-demo-server (C++), on Express and node-postgres.
//
//   cd examples/node && npm ci && node server.js --listen 127.0.0.1:8080
//
// The database comes from the standard PG* environment variables (PGHOST,
// PGPORT, PGUSER, PGDATABASE, ...). POST /payments is the business logic alone;
// the Idempotency-Key handling is the pg-idempotency package's middleware
// (node-client/ in this repository).
const express = require('express');
const pg = require('pg');
const { idempotency, transaction, reject } = require('pg-idempotency');

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

// The one place that says how the service connects to the database.
function makePool(size) {
  const pool = new pg.Pool({ max: size });
  // An idle connection whose backend went away: the pool drops it and makes a new one later.
  pool.on('error', (err) => console.error(`idle database connection lost: ${err.message}`));
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

function createApp(pool, { benchRoutes = false, log = true } = {}) {
  const app = express();
  app.disable('x-powered-by');
  if (log) {
    app.use((req, res, next) => {  // one line per request
      res.on('finish', () => {
        const key = req.get('Idempotency-Key');
        const replayed = res.getHeader('Idempotent-Replayed') ? ' replayed' : '';
        console.log(`${req.method} ${req.path} ${res.statusCode} key=${key ?? '-'}${replayed}`);
      });
      next();
    });
  }
  // Scope "payments"; fingerprint idempotency.fingerprint(body), as the C++ service.
  app.post('/payments', idempotency({ pool, scope: () => 'payments', fingerprint: 'json-body' }), createPayment);
  app.get('/payments/count', transaction({ pool }), countPayments);
  // The baseline of bench/http: the same business logic in a plain transaction.
  if (benchRoutes) app.post('/bench/payments-plain', transaction({ pool, fingerprint: 'json-body' }), createPayment);
  return app;
}

function parseArgs(argv) {
  const args = { listen: '127.0.0.1:8080', pool: 32, benchRoutes: false };
  for (let i = 0; i < argv.length; i++) {
    if (argv[i] === '--listen' && i + 1 < argv.length) args.listen = argv[++i];
    else if (argv[i] === '--pool' && i + 1 < argv.length) args.pool = Number(argv[++i]);
    else if (argv[i] === '--bench-routes') args.benchRoutes = true;
    else {
      console.error('usage: node server.js --listen HOST:PORT [--pool N] [--bench-routes]   (database from PG* variables)');
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
  const pool = makePool(args.pool);
  try {
    await setupSchema(pool);
  } catch (err) {
    console.error(`node server: setup failed: ${err.message}`);
    process.exit(1);
  }
  const server = createApp(pool, { benchRoutes: args.benchRoutes }).listen(port, host, () => {
    console.log(`node idempotency demo listening on ${host}:${port}`);
  });
  const stop = () => server.close(() => pool.end().then(() => process.exit(0)));
  process.on('SIGINT', stop);
  process.on('SIGTERM', stop);
}

if (require.main === module) main();

module.exports = { createApp, makePool, setupSchema };
