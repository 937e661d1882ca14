// Compiled by `tsc --noEmit` (never run): the declarations in index.d.ts
// describe what a TypeScript service writes against the package.
import express from 'express';
import pg from 'pg';
import {
  claim, checkpoint, execute, finish, idempotency, IdempotencyError, lookup, once, reject, Rejection, release,
  transaction, type ClaimResult, type KeyRecord,
} from 'pg-idempotency';

const pool = new pg.Pool({ max: 4 });
const app = express();

app.post('/payments', idempotency({ pool, scope: () => 'payments', fingerprint: 'json-body', acquireTimeout: 2000 }),
  async (req, res) => {
    if (typeof req.body?.amount !== 'number') return reject(res, 400, 'invalid_request', 'amount');
    const { rows } = await req.db.query<{ id: string }>('INSERT INTO demo.payments (amount) VALUES ($1) RETURNING id',
      [req.body.amount]);
    const held: bigint | null | undefined = req.idempotency?.token;
    void held;
    res.status(201).json({ id: Number(rows[0].id) });
  });
app.get('/count', transaction({ pool }), async (req, res) => {
  res.json((await req.db.query('SELECT 1 AS n')).rows[0]);
});
app.post('/tenants', idempotency({
  pool,
  scope: (req) => {
    const tenant = req.headers['x-tenant'];
    if (typeof tenant !== 'string') throw new Rejection(401, 'unauthenticated', 'no tenant');
    return `tenant:${tenant}`;
  },
  ttl: '7 days',
  lease: 30_000,
  replayHeaders: ['Location'],
  telemetry: { recordRawKey: false },
}), (_req, res) => { res.sendStatus(204); });

async function consumer(client: pg.Client, messageId: string): Promise<boolean> {
  return once(client, 'orders', messageId, async (tx) => {
    await tx.query('INSERT INTO ledger (id) VALUES ($1)', [messageId]);
  }, { ttl: '30 days' });
}

async function multiStep(): Promise<void> {
  const r: ClaimResult = await claim(pool, 'exports', 'job-1', { request: { report: 7 }, lease: '5 minutes' });
  if (r.outcome !== 'claimed' || r.token === null) return;
  const until: Date = await checkpoint(pool, 'exports', 'job-1', r.token, 'uploaded');
  void until;
  try {
    await finish(pool, 'exports', 'job-1', r.token, { status: 200, body: Buffer.from('done'), headers: { Location: '/x' } });
  } catch (err) {
    if (err instanceof IdempotencyError && err.sqlstate === 'IK001') await release(pool, 'exports', 'job-1', r.token);
  }
  const k: KeyRecord | null = await lookup(pool, 'exports', 'job-1');
  void k?.response?.body.length;
}

async function executeForm(client: pg.PoolClient): Promise<number> {
  const r = await execute(client, 'payments', 'k1', async (tx, held) => {
    await tx.query('SELECT $1::int8', [held.token.toString()]);
    return { status: 201, body: '{"id": 1}', headers: { 'Content-Type': 'application/json', 'Set-Cookie': ['a=1', 'b=2'] } };
  }, { request: '{"amount": 1}', wait: 500 });
  return r.response?.status ?? 0;
}

void consumer; void multiStep; void executeForm;
