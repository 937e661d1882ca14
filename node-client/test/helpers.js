'use strict';
// What the package's tests share: a database of their own on the server the
// PG* variables name (the cluster scripts/test started, or PgBouncer in front
// of it), with the extension created.
const pg = require('pg');

const run = `${process.pid}-${Date.now()}`;
let n = 0;
const newKey = (prefix = 'k') => `${prefix}-${run}-${n++}`;
const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

async function createDatabase(name) {
  const root = new pg.Client({ database: 'postgres' });
  await root.connect();
  const { rowCount } = await root.query('SELECT 1 FROM pg_database WHERE datname = $1', [name]);
  if (rowCount === 0) await root.query(`CREATE DATABASE ${name}`);
  await root.end();
  const c = new pg.Client({ database: name });
  await c.connect();
  await c.query('SET client_min_messages = warning');
  await c.query('CREATE EXTENSION IF NOT EXISTS pg_idempotency');
  await c.end();
}

function makePool(database, max) {
  const pool = new pg.Pool({ database, max });
  pool.on('error', () => {});  // idle connections terminated by a test
  return pool;
}

// Terminates the backends of database that sit idle inside a transaction (a
// request or handler holding its key), polling until one is found; returns
// how many were terminated.
async function killIdleInTransaction(admin, database) {
  for (let i = 0; i < 250; i++) {
    await sleep(20);
    const { rows } = await admin.query(
      `SELECT pg_catalog.pg_terminate_backend(pid, 10000) AS ok FROM pg_catalog.pg_stat_activity
        WHERE datname = $1 AND pid <> pg_catalog.pg_backend_pid() AND state = 'idle in transaction'`, [database]);
    const killed = rows.filter((r) => r.ok).length;
    if (killed > 0) return killed;
  }
  return 0;
}

module.exports = { newKey, sleep, createDatabase, makePool, killIdleInTransaction };
