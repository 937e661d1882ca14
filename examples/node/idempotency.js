'use strict';
// Idempotency-Key handling for any Express route, on pg_idempotency's SQL API.
//
//   const { idempotency, reject } = require('./idempotency');
//   app.post('/payments', idempotency({ pool }), async (req, res) => {
//     // business logic only: req.db is the pg client of the transaction that holds the key
//     const { rows } = await req.db.query('INSERT ... RETURNING id', [...]);
//     res.status(201).json({ id: rows[0].id });
//   });
//
// The same behaviour as the C++ middleware (<idempotency/httplib.hpp>): the key
// header (1-255 bytes; 400 when required and missing), the scope from a callback,
// a fingerprint of method + path + body (canonical JSON for JSON bodies, raw
// bytes otherwise), claim -> route -> finish -> COMMIT in one transaction, the
// replay byte for byte with "Idempotent-Replayed: true", 409 with Retry-After,
// 422, 400 and 503 when the database connection is lost. reject() answers
// without storing anything; a status of 500 or more rolls the work and the claim
// back. Error bodies are JSON {"error": "<code>", "message": "<text>"}.
//
// Every statement is an unnamed one (plain client.query(text, values)), so the
// middleware also works through a transaction-mode connection pooler.

const { TextDecoder } = require('node:util');

const MAX_BODY = 1024 * 1024;
const SKIP = new Set([
  'content-length', 'connection', 'keep-alive', 'transfer-encoding', 'date', 'set-cookie', 'idempotent-replayed',
]);
const NOT_STORED = Symbol('idempotency.notStored');

const CLAIM_COLUMNS = 'SELECT c.outcome::text AS outcome, c.token, c.response_status, c.response_headers, ' +
  'c.response_body, c.locked_until FROM ';
const CLAIM_SQL = {
  fingerprint: CLAIM_COLUMNS + 'idempotency.claim($1, $2, idempotency.fingerprint($3::jsonb), $4::interval, ' +
    '$5::interval, coalesce($6::interval, interval \'0\')) AS c',
  none: CLAIM_COLUMNS + 'idempotency.claim($1, $2, NULL, $3::interval, $4::interval, ' +
    'coalesce($5::interval, interval \'0\')) AS c',
};
const FINISH_SQL = 'SELECT idempotency.finish($1, $2, $3::int8, $4::int4, $5::bytea, $6::jsonb)';

// The error body, formatted as the C++ service formats it.
function errorBody(code, message) {
  return `{"error": ${JSON.stringify(code)}, "message": ${JSON.stringify(message)}}`;
}

function sendError(res, status, code, message, headers = {}) {
  for (const name of res.getHeaderNames()) res.removeHeader(name);
  res.statusCode = status;
  res.setHeader('Content-Type', 'application/json');
  for (const [n, v] of Object.entries(headers)) res.setHeader(n, v);
  res.end(errorBody(code, message));
}

// Answers without storing the response: the route's work and the claim are
// rolled back and the key is free again (e.g. a validation error that the
// client may fix and retry with the same key).
function reject(res, status, code, message) {
  res[NOT_STORED] = true;
  sendError(res, status, code, message);
}

class Rejection extends Error {
  constructor(status, code, message) {
    super(message);
    this.status = status;
    this.code = code;
  }
}

// Class 08, the shutdown codes of class 57, socket errors, or a client that
// node-postgres has closed: the connection is gone.
function connectionLost(err, broken) {
  if (broken) return true;
  const code = err && typeof err.code === 'string' ? err.code : '';
  if (/^08/.test(code) || /^57P0[1-3]$/.test(code) || /^E[A-Z]+$/.test(code)) return true;
  return /Connection terminated|not queryable|connection error/i.test(String(err && err.message));
}

function isJson(req) {
  const type = String(req.headers['content-type'] || '').split(';')[0].trim().toLowerCase();
  return type === 'application/json' || (type.length > 5 && type.endsWith('+json'));
}

// The request path as cpp-httplib gives it (percent-decoded, without the query).
function decodedPath(req) {
  try {
    return decodeURIComponent(req.path);
  } catch {
    return req.path;
  }
}

// The JSON document whose idempotency.fingerprint() is the request's: the same
// documents as the C++ middleware builds, so both services fingerprint alike.
function fingerprintDocument(req, raw, text, mode) {
  if (mode === 'json-body') return text;
  if (isJson(req)) return `[${JSON.stringify(req.method)}, ${JSON.stringify(decodedPath(req))}, ${text}]`;
  return JSON.stringify({ method: req.method, path: decodedPath(req), body_hex: raw.toString('hex') });
}

async function readBody(req, limit) {
  if (Buffer.isBuffer(req.body)) return req.body;  // an earlier express.raw()
  const chunks = [];
  let size = 0;
  for await (const chunk of req) {
    size += chunk.length;
    if (size > limit) throw new Rejection(413, 'payload_too_large', `the request body is larger than ${limit} bytes`);
    chunks.push(chunk);
  }
  return Buffer.concat(chunks);
}

// The route's headers worth replaying, as the flat JSON object finish() stores.
function storedHeaders(res, only) {
  const wanted = only ? new Set(only.map((h) => h.toLowerCase())) : null;
  const out = {};
  for (const name of res.getRawHeaderNames()) {
    const lower = name.toLowerCase();
    if (wanted ? !wanted.has(lower) : SKIP.has(lower)) continue;
    const value = res.getHeader(name);
    out[name] = Array.isArray(value) ? value.join(', ') : String(value);
  }
  return Object.keys(out).length ? JSON.stringify(out) : null;
}

function toBuffer(chunk, encoding) {
  if (Buffer.isBuffer(chunk)) return chunk;
  if (chunk instanceof Uint8Array) return Buffer.from(chunk);
  return Buffer.from(String(chunk), typeof encoding === 'string' ? encoding : 'utf8');
}

function replay(res, row) {
  const headers = row.response_headers || {};
  for (const [name, value] of Object.entries(headers)) res.setHeader(name, String(value));
  res.setHeader('Idempotent-Replayed', 'true');
  res.statusCode = row.response_status;
  res.end(row.response_body || Buffer.alloc(0));
}

function retryAfterSeconds(lockedUntil) {
  if (!lockedUntil) return 1;
  return Math.max(1, Math.ceil((new Date(lockedUntil).getTime() - Date.now()) / 1000));
}

// Options:
//   pool           a pg.Pool (required)
//   keyHeader      'Idempotency-Key'; null: never read a key (a plain transaction, see transaction())
//   keyRequired    true; false: a request without the header runs the route in a plain transaction
//   scope          (req) => string (or a promise of one), e.g. the authenticated tenant; it may throw a
//                  Rejection (e.g. 401). Default: `${method} ${path}`
//   fingerprint    'request' (method + path + body), 'json-body' (idempotency.fingerprint(body)) or 'none'
//   replayHeaders  the response headers to store (default: all but Date, Set-Cookie and hop-by-hop ones)
//   ttl, lease, wait   intervals as text ('24 hours', '30 seconds'); default: the server's settings, wait 0
//   limit          largest body read, in bytes (1 MiB)
function idempotency(options) {
  const o = {
    keyHeader: 'Idempotency-Key', keyRequired: true, fingerprint: 'request', limit: MAX_BODY, ...options,
  };
  if (!o.pool) throw new Error('idempotency: options.pool (a pg.Pool) is required');
  if (!['request', 'json-body', 'none'].includes(o.fingerprint)) throw new Error('idempotency: bad fingerprint option');

  return async function idempotencyMiddleware(req, res, next) {
    let client = null;
    let broken = false;
    const onError = () => { broken = true; };
    const release = () => {
      if (!client) return;
      client.removeListener('error', onError);
      client.release(broken || undefined);  // true: close it, the pool makes a new one
      client = null;
    };
    const fail = (err, claimed) => {
      if (err instanceof Rejection) return sendError(res, err.status, err.code, err.message);
      const lost = connectionLost(err, broken);
      if (lost) broken = true;
      release();
      if (lost) {
        return sendError(res, 503, 'database_unavailable',
          `the database connection was lost; retry the request: ${err.message}`);
      }
      if (!claimed && ['22P02', '22P05', '22021'].includes(err.code)) {
        return sendError(res, 400, 'malformed_json', `the request is not valid JSON: ${err.message}`);
      }
      return sendError(res, 500, err.code ? 'database_error' : 'internal_error',
        err.code ? `${err.code}: ${err.message}` : err.message);
    };

    try {
      const key = o.keyHeader ? req.get(o.keyHeader) : undefined;
      if ((key !== undefined && (key.length === 0 || Buffer.byteLength(key) > 255)) ||
          (key === undefined && o.keyRequired)) {
        return sendError(res, 400, 'missing_idempotency_key',
          `this endpoint requires an ${o.keyHeader} header of 1 to 255 bytes`);
      }
      const raw = await readBody(req, o.limit);
      req.rawBody = raw;
      req.body = raw;
      let text = null;
      if (isJson(req) || o.fingerprint === 'json-body') {
        try {
          text = new TextDecoder('utf-8', { fatal: true }).decode(raw);
          req.body = JSON.parse(text);
        } catch (e) {
          return sendError(res, 400, 'malformed_json', `the request body is not valid JSON: ${e.message}`);
        }
      }
      const scope = key === undefined ? null : o.scope ? await o.scope(req) : `${req.method} ${req.path}`;

      client = await o.pool.connect();
      client.on('error', onError);  // a backend that dies while checked out must not crash the process
      await client.query('BEGIN');
      let token = null;
      if (key !== undefined) {
        const times = [o.ttl ?? null, o.lease ?? null, o.wait ?? null];
        const { rows: [row] } = o.fingerprint === 'none'
          ? await client.query(CLAIM_SQL.none, [scope, key, ...times])
          : await client.query(CLAIM_SQL.fingerprint, [scope, key, fingerprintDocument(req, raw, text, o.fingerprint),
            ...times]);
        if (row.outcome !== 'claimed') {
          await client.query('ROLLBACK');
          release();
          if (row.outcome === 'replay') return replay(res, row);
          if (row.outcome === 'mismatch') {
            return sendError(res, 422, 'idempotency_key_reused',
              'this Idempotency-Key was already used with a different request; use a new key');
          }
          return sendError(res, 409, 'request_in_progress',
            'a request with this Idempotency-Key is still being processed; retry later',
            { 'Retry-After': String(retryAfterSeconds(row.locked_until)) });
        }
        token = row.token;
      }

      // Hold the route's answer until its response is stored and committed.
      const chunks = [];
      const write = res.write;
      const end = res.end;
      res.write = function (chunk, encoding, cb) {
        if (chunk != null) chunks.push(toBuffer(chunk, encoding));
        if (typeof encoding === 'function') encoding();
        else if (typeof cb === 'function') cb();
        return true;
      };
      res.end = function (chunk, encoding, cb) {
        if (typeof chunk === 'function') [cb, chunk] = [chunk, undefined];
        if (typeof encoding === 'function') [cb, encoding] = [encoding, undefined];
        if (chunk != null) chunks.push(toBuffer(chunk, encoding));
        res.write = write;
        res.end = end;
        const body = Buffer.concat(chunks);
        const store = !res[NOT_STORED] && res.statusCode < 500;
        (async () => {
          if (!store) {
            await client.query('ROLLBACK');
          } else {
            if (token !== null) {
              await client.query(FINISH_SQL, [scope, key, token, res.statusCode, body, storedHeaders(res, o.replayHeaders)]);
            }
            await client.query('COMMIT');
          }
          release();
          end.call(res, body, cb);
        })().catch(async (err) => {
          if (client && !connectionLost(err, broken)) {
            try {
              await client.query('ROLLBACK');
            } catch {
              broken = true;
            }
          }
          fail(err, true);
        });
        return res;
      };
      req.db = client;
      req.idempotency = key === undefined ? null : { scope, key, token };
      next();
    } catch (err) {
      if (client && !connectionLost(err, broken)) {
        try {
          await client.query('ROLLBACK');
        } catch {
          broken = true;
        }
      }
      fail(err, false);
    }
  };
}

// The route in a plain transaction on a pooled connection (req.db), no key
// involved, with the same error handling.
function transaction(options) {
  return idempotency({ ...options, keyHeader: null, keyRequired: false });
}

module.exports = { idempotency, transaction, reject, Rejection, fingerprintDocument };
