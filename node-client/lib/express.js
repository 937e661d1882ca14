'use strict';
// Idempotency-Key handling for any Express (or connect-style) route.
//
//   const { idempotency, reject } = require('pg-idempotency');
//   app.post('/payments', idempotency({ pool }), async (req, res) => {
//     // business logic only: req.db is the pg client of the transaction that holds the key
//     const { rows } = await req.db.query('INSERT ... RETURNING id', [...]);
//     res.status(201).json({ id: rows[0].id });
//   });
//
// The same behaviour as the C++ middleware (<idempotency/httplib.hpp>): the key
// header (1-255 bytes; 400 when required and missing), the scope from a callback,
// a fingerprint of method + path + body (canonical JSON for JSON bodies, raw
// bytes otherwise) identical to the C++ one, claim -> route -> finish -> COMMIT
// in one transaction, the replay byte for byte with "Idempotent-Replayed: true",
// 409 with Retry-After, 422, 400, and 503 when the database connection is lost
// or none became free in time (backpressure). reject() answers without storing
// anything; a status of 500 or more rolls the work and the claim back.
// Error bodies are JSON {"error": "<code>", "message": "<text>"}.

const { TextDecoder } = require('node:util');
const api = require('./client');
const { isConnectionLost } = require('./errors');
const { fingerprintDocument, isJson, requestPath } = require('./fingerprint');
const { makeTelemetry } = require('./telemetry');

const MAX_BODY = 1024 * 1024;
// Not stored by default: framing and per-connection headers, and the replay marker.
const SKIP = new Set(['content-length', 'connection', 'keep-alive', 'transfer-encoding', 'date', 'idempotent-replayed']);
const NOT_STORED = Symbol('idempotency.notStored');

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

// Thrown by a scope callback (or anything before the route) to answer status
// with an error body, e.g. 401 when the tenant is unknown.
class Rejection extends Error {
  constructor(status, code, message, headers = {}) {
    super(message);
    this.name = 'Rejection';
    this.status = status;
    this.code = code;
    this.headers = headers;
  }
}

function header(req, name) {
  const v = req.headers[name.toLowerCase()];
  return Array.isArray(v) ? v.join(', ') : v;
}

async function readBody(req, limit) {
  if (Buffer.isBuffer(req.body)) return req.body;  // an earlier express.raw()
  if (req.readableEnded && req.body !== undefined) {
    // An earlier express.json() consumed the stream: its value, as JSON text
    // (the fingerprint is canonical, so the original spacing and order do not count).
    return Buffer.from(JSON.stringify(req.body));
  }
  const chunks = [];
  let size = 0;
  for await (const chunk of req) {
    size += chunk.length;
    if (size > limit) throw new Rejection(413, 'payload_too_large', `the request body is larger than ${limit} bytes`);
    chunks.push(chunk);
  }
  return Buffer.concat(chunks);
}

// The route's headers worth replaying, as the JSON object finish() stores: a
// header sent once is a string, one sent several times (Set-Cookie, Link, ...)
// an array of its values, replayed as that many header lines.
function storedHeaders(res, only) {
  const wanted = only ? new Set(only.map((h) => h.toLowerCase())) : null;
  const out = {};
  for (const name of res.getRawHeaderNames()) {
    const lower = name.toLowerCase();
    if (wanted ? !wanted.has(lower) : SKIP.has(lower)) continue;
    const value = res.getHeader(name);
    out[name] = Array.isArray(value) ? (value.length === 1 ? String(value[0]) : value.map(String)) : String(value);
  }
  return Object.keys(out).length ? out : null;
}

function toBuffer(chunk, encoding) {
  if (Buffer.isBuffer(chunk)) return chunk;
  if (chunk instanceof Uint8Array) return Buffer.from(chunk.buffer, chunk.byteOffset, chunk.byteLength);
  return Buffer.from(String(chunk), typeof encoding === 'string' ? encoding : 'utf8');
}

function replay(res, response) {
  for (const [name, value] of Object.entries(response.headers || {})) {
    res.setHeader(name, Array.isArray(value) ? value.map(String) : String(value));
  }
  res.setHeader('Idempotent-Replayed', 'true');
  res.statusCode = response.status;
  res.end(response.body);
}

function retryAfterSeconds(lockedUntil) {
  if (!lockedUntil) return 1;
  return Math.max(1, Math.ceil((new Date(lockedUntil).getTime() - Date.now()) / 1000));
}

class Busy extends Error {}

// A connection from the pool within timeoutMs, or Busy: never an unbounded
// queue. When every connection is in use and maxWaiting requests already wait,
// Busy at once; a request that gave up hands its connection back as soon as
// the pool lends it.
async function acquire(pool, timeoutMs, maxWaiting) {
  const max = pool.options && pool.options.max;
  if (typeof max === 'number' && pool.idleCount === 0 && pool.totalCount >= max && pool.waitingCount >= maxWaiting) {
    throw new Busy(`all ${max} database connections are in use and ${pool.waitingCount} requests wait for one`);
  }
  const pending = pool.connect();
  let timer;
  const expired = new Promise((resolve) => { timer = setTimeout(resolve, timeoutMs, Busy); });
  const won = await Promise.race([pending, expired]).finally(() => clearTimeout(timer));
  if (won === Busy) {
    pending.then((client) => client.release(), () => {});
    throw new Busy(`no database connection became free within ${timeoutMs} ms`);
  }
  return won;
}

// Options:
//   pool           a pg.Pool (required)
//   keyHeader      'Idempotency-Key'; null: never read a key (a plain transaction, see transaction())
//   keyRequired    true; false: a request without the header runs the route in a plain transaction
//   scope          (req) => string (or a promise of one), e.g. the authenticated tenant; it may throw a
//                  Rejection (e.g. 401). Default: `${method} ${path}`
//   fingerprint    'request' (method + path + body), 'json-body' (idempotency.fingerprint(body)) or 'none'
//   replayHeaders  the response headers to store (default: all but Date and hop-by-hop ones)
//   ttl, lease, wait   milliseconds or interval text ('24 hours'); default: the server's settings, wait 0
//   limit          largest body read, in bytes (1 MiB)
//   acquireTimeout longest wait for a pool connection, in ms (5000); then 503 with Retry-After
//   maxWaiting     most requests waiting for a connection at once (default: the pool's max); more: 503 at once
//   retryAfter     the Retry-After of those 503 answers, in seconds (1)
//   telemetry      OpenTelemetry spans and metrics when @opentelemetry/api is installed (lib/telemetry.js):
//                  false: off; { tracerProvider, meterProvider, recordRawKey } to choose (default: the globals);
//                  storeTraceContext: false for a database still at extension 1.0/1.1 (claim's trace_context is 1.2's);
//                  firstExecutionAge: false saves a replay's lookup()
function idempotency(options) {
  const o = {
    keyHeader: 'Idempotency-Key', keyRequired: true, fingerprint: 'request', limit: MAX_BODY,
    acquireTimeout: 5000, retryAfter: 1, ...options,
  };
  if (!o.pool) throw new Error('idempotency: options.pool (a pg.Pool) is required');
  if (!['request', 'json-body', 'none'].includes(o.fingerprint)) throw new Error('idempotency: bad fingerprint option');
  if (o.maxWaiting === undefined) o.maxWaiting = (o.pool.options && o.pool.options.max) || 10;
  const claimOptions = { ttl: o.ttl, lease: o.lease, wait: o.wait };
  const telemetry = o.keyHeader ? makeTelemetry(o.telemetry) : null;  // requests with a key only

  return async function idempotencyMiddleware(req, res, next) {
    const obs = telemetry ? telemetry.startRequest(req, requestPath(req)) : null;
    if (obs) res.once('close', () => obs.end(res.statusCode));
    let client = null;
    let broken = false;
    const onError = () => { broken = true; };
    const releaseClient = () => {
      if (!client) return;
      client.removeListener('error', onError);
      client.release(broken || undefined);  // true: close it, the pool makes a new one
      client = null;
    };
    const rollback = async () => {
      if (!client || broken) return;
      try {
        await client.query('ROLLBACK');
      } catch {
        broken = true;
      }
    };
    const fail = (err, claimed) => {
      if (err instanceof Rejection) return sendError(res, err.status, err.code, err.message, err.headers);
      if (err instanceof Busy) {
        obs?.set({ errorType: '08004' });  // as the C++ pool's timeout: no connection could be had
        return sendError(res, 503, 'database_busy', `${err.message}; retry later`,
          { 'Retry-After': String(o.retryAfter) });
      }
      const lost = broken || isConnectionLost(err);
      if (lost) broken = true;
      obs?.set({ errorType: lost ? (err.sqlstate?.startsWith('08') ? err.sqlstate : '08006') : (err.sqlstate ?? err.code ?? null) });
      releaseClient();
      if (lost) {
        return sendError(res, 503, 'database_unavailable',
          `the database connection was lost; retry the request: ${err.message}`, { 'Retry-After': String(o.retryAfter) });
      }
      if (!claimed && ['22P02', '22P05', '22021'].includes(err.code)) {
        return sendError(res, 400, 'malformed_json', `the request is not valid JSON: ${err.message}`);
      }
      return sendError(res, 500, err.code ? 'database_error' : 'internal_error',
        err.code ? `${err.code}: ${err.message}` : err.message);
    };

    try {
      const key = o.keyHeader ? header(req, o.keyHeader) : undefined;
      if ((key !== undefined && (key.length === 0 || Buffer.byteLength(key) > 255)) ||
          (key === undefined && o.keyRequired)) {
        obs?.set({ outcome: 'rejected' });
        return sendError(res, 400, 'missing_idempotency_key',
          `this endpoint requires an ${o.keyHeader} header of 1 to 255 bytes`);
      }
      const raw = await readBody(req, o.limit);
      req.rawBody = raw;
      req.body = raw.length === 0 ? undefined : raw;  // an empty body is no body, whatever its Content-Type
      let text = null;
      if (raw.length > 0 && (isJson(req) || o.fingerprint === 'json-body')) {
        try {
          text = new TextDecoder('utf-8', { fatal: true }).decode(raw);
          req.body = JSON.parse(text);
        } catch (e) {
          return sendError(res, 400, 'malformed_json', `the request body is not valid JSON: ${e.message}`);
        }
      }
      const scope = key === undefined ? null : o.scope ? await o.scope(req) : `${req.method} ${requestPath(req)}`;
      if (key !== undefined) obs?.set({ scope, key });

      client = await acquire(o.pool, o.acquireTimeout, o.maxWaiting);
      client.on('error', onError);  // a backend that dies while checked out must not crash the process
      await client.query('BEGIN');
      let token = null;
      if (key !== undefined) {
        const claimWith = o.fingerprint === 'none' ? { ...claimOptions }
          : { ...claimOptions, request: fingerprintDocument(req, raw, text, o.fingerprint) };
        const traceContext = obs?.traceContext();
        if (traceContext !== undefined) claimWith.traceContext = traceContext;
        const r = obs ? await obs.sql(client, 'idempotency.claim', () => api.claim(client, scope, key, claimWith))
          : await api.claim(client, scope, key, claimWith);
        obs?.set({ outcome: r.outcome, attempt: r.attempt, storedTraceContext: r.traceContext ?? null });
        if (r.outcome === 'replay' && obs?.wantsFirstExecutionAge()) {
          try {  // a failure here must not fail the replay: the age is just not known
            const k = await obs.sql(client, 'idempotency.lookup', () => api.lookup(client, scope, key));
            if (k && k.completedAt) obs.set({ age: (Date.now() - new Date(k.completedAt).getTime()) / 1000 });
          } catch {
            // the ROLLBACK below ends the transaction whatever state the lookup left it in
          }
        }
        if (r.outcome !== 'claimed') {
          await client.query('ROLLBACK');
          releaseClient();
          if (r.outcome === 'replay') return replay(res, r.response);
          if (r.outcome === 'mismatch') {
            return sendError(res, 422, 'idempotency_key_reused',
              `this ${o.keyHeader} was already used with a different request; use a new key`);
          }
          return sendError(res, 409, 'request_in_progress',
            `a request with this ${o.keyHeader} is still being processed; retry later`,
            { 'Retry-After': String(retryAfterSeconds(r.lockedUntil)) });
        }
        token = r.token;
      }
      holdResponse(res, async (body) => {
        if (res[NOT_STORED] || res.statusCode >= 500) {
          await client.query('ROLLBACK');
        } else {
          if (token !== null) {
            const response = { status: res.statusCode, body, headers: storedHeaders(res, o.replayHeaders) };
            if (obs) await obs.sql(client, 'idempotency.finish', () => api.finish(client, scope, key, token, response));
            else await api.finish(client, scope, key, token, response);
          }
          await client.query('COMMIT');
        }
        releaseClient();
      }, async (err) => {
        if (isConnectionLost(err)) broken = true;
        await rollback();
        fail(err, true);
      });
      req.db = client;
      req.idempotency = key === undefined ? null : { scope, key, token };
      if (obs) telemetry.run(obs, next);
      else next();
    } catch (err) {
      if (isConnectionLost(err)) broken = true;
      await rollback();
      fail(err, false);
    }
  };
}

// Holds the route's answer (status, headers, body) until store(body) has
// stored and committed it, then sends it; onError(err) answers instead when
// storing failed.
function holdResponse(res, store, onError) {
  const chunks = [];
  const { write, end, writeHead } = res;
  res.writeHead = function (status, reason, headers) {
    if (typeof reason !== 'string') [headers, reason] = [reason, undefined];
    res.statusCode = status;
    if (reason) res.statusMessage = reason;
    if (Array.isArray(headers)) {
      for (let i = 0; i + 1 < headers.length; i += 2) res.appendHeader(headers[i], headers[i + 1]);
    } else if (headers) {
      for (const [n, v] of Object.entries(headers)) res.setHeader(n, v);
    }
    return res;
  };
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
    Object.assign(res, { write, end, writeHead });
    const body = Buffer.concat(chunks);
    store(body).then(() => end.call(res, body, cb), onError);
    return res;
  };
}

// The route in a plain transaction on a pooled connection (req.db), no key
// involved, with the same error handling and backpressure.
function transaction(options) {
  return idempotency({ ...options, keyHeader: null, keyRequired: false });
}

module.exports = { idempotency, transaction, reject, Rejection };
