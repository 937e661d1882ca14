'use strict';
// OpenTelemetry traces and metrics of the middleware, through
// @opentelemetry/api when the application has it installed (an optional peer
// dependency); without it, or with the API but no SDK, every call is a no-op.
// The names are the C++ middleware's (<idempotency/opentelemetry.hpp>):
//
// Traces. Each request through the middleware is a span: a SERVER span
// "POST /payments" (parent: the incoming traceparent) when nothing traces the
// request yet, else an INTERNAL child "pg_idempotency POST /payments" of the
// active span (e.g. the HTTP instrumentation's server span), carrying
//   pg_idempotency.outcome   claimed | replay | in_progress | mismatch | rejected
//   pg_idempotency.scope, pg_idempotency.attempt (claimed)
//   pg_idempotency.key_hash  lower-case hex SHA-256 of the key
//   pg_idempotency.key       only with { recordRawKey: true } (keys can be sensitive)
// Each idempotency.* call is a CLIENT span below it ("SELECT idempotency.claim",
// database conventions: db.system.name = postgresql, db.operation.name,
// db.stored_procedure.name, db.namespace, server.address/port, and
// db.response.status_code = the SQLSTATE and error.type on failure).
// The claim stores the request's traceparent with the key (extension 1.2; off
// with { storeTraceContext: false } for a database at 1.0 or 1.1); a replay (or
// a 409 while another request holds the key) adds an INTERNAL child span
// "pg_idempotency replay" ("... in_progress") with a span link to the span that
// did the work and pg_idempotency.first_execution.age (seconds since the stored
// answer was made; one lookup() per replay, { firstExecutionAge: false } off).
// A request that failed (5xx) has no outcome; error.type says why, and its span
// status is ERROR (server spans: 5xx only, never a 409 or a 422).
//
// Metrics (meter "pg_idempotency"):
//   pg_idempotency.requests          counter, {request}
//   pg_idempotency.request.duration  histogram, s
// both by pg_idempotency.outcome (and error.type for a failed request).

const crypto = require('node:crypto');
const { version } = require('../package.json');

let otel = null;
try {
  otel = require('@opentelemetry/api');  // eslint-disable-line global-require
} catch {
  // not installed: no telemetry
}

const NAME = 'pg_idempotency';

function keyHash(key) {
  return crypto.createHash('sha256').update(key, 'utf8').digest('hex');
}

const TRACEPARENT = /^00-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})$/;

function traceparentOf(spanContext) {
  return `00-${spanContext.traceId}-${spanContext.spanId}-${(spanContext.traceFlags & 0xff).toString(16).padStart(2, '0')}`;
}

// The span context a stored traceparent names, or null when it is malformed.
function spanContextOf(traceparent) {
  const m = typeof traceparent === 'string' ? TRACEPARENT.exec(traceparent) : null;
  if (!m || /^0+$/.test(m[1]) || /^0+$/.test(m[2])) return null;
  return { traceId: m[1], spanId: m[2], traceFlags: parseInt(m[3], 16), isRemote: true };
}

// options: false (off), or { tracerProvider, meterProvider, recordRawKey,
// storeTraceContext, firstExecutionAge }; the providers default to the global
// ones the SDK registers.
function makeTelemetry(options) {
  if (options === false || !otel) return null;
  const o = options && typeof options === 'object' ? options : {};
  const api = otel;
  const tracer = (o.tracerProvider ?? api.trace.getTracerProvider()).getTracer(NAME, version);
  // The global meter provider is no proxy: look it up when first used, after the SDK started.
  let instruments = null;
  const metricsOf = () => {
    const provider = o.meterProvider ?? api.metrics.getMeterProvider();
    if (!instruments || instruments.provider !== provider) {
      const meter = provider.getMeter(NAME, version);
      instruments = {
        provider,
        requests: meter.createCounter('pg_idempotency.requests',
          { description: 'Requests with an idempotency key, by outcome', unit: '{request}' }),
        duration: meter.createHistogram('pg_idempotency.request.duration',
          { description: 'Duration of requests with an idempotency key, by outcome', unit: 's' }),
      };
    }
    return instruments;
  };

  // One request: its span, the context its database spans and the route run in.
  function startRequest(req, path) {
    const started = process.hrtime.bigint();
    const active = api.trace.getSpan(api.context.active());
    const attributes = { 'http.request.method': req.method, 'url.path': path };
    let span;
    let parent;
    let request;  // the request's span: the one a replay links to
    if (active && active.spanContext().traceId !== api.INVALID_TRACEID) {
      span = tracer.startSpan(`${NAME} ${req.method} ${path}`, { kind: api.SpanKind.INTERNAL, attributes });
      request = active;
    } else {
      parent = api.propagation.extract(api.ROOT_CONTEXT, req.headers);
      span = tracer.startSpan(`${req.method} ${path}`, {
        kind: api.SpanKind.SERVER,
        attributes: { ...attributes, 'url.scheme': 'http', 'http.route': req.route?.path ?? path },
      }, parent);
      request = span;
    }
    const startTime = new Date();
    const context = api.trace.setSpan(api.context.active(), span);
    const state = {
      outcome: null, scope: null, attempt: null, key: null, errorType: null, storedTraceContext: null, age: null,
    };

    // The span that did the work, as a link on a child span (links are given
    // when a span starts, and the stored context is known once the claim answered).
    function linkToFirstExecution() {
      const linked = spanContextOf(state.storedTraceContext);
      if (!linked) return;
      const a = { 'pg_idempotency.outcome': state.outcome ?? '' };
      if (state.key !== null) a['pg_idempotency.key_hash'] = keyHash(state.key);
      if (state.age !== null) a['pg_idempotency.first_execution.age'] = state.age;
      tracer.startSpan(`${NAME} ${state.outcome ?? 'link'}`, {
        kind: api.SpanKind.INTERNAL, attributes: a, links: [{ context: linked }], startTime,
      }, context).end();
    }

    return {
      context,
      set(fields) { Object.assign(state, fields); },
      // The traceparent claim() stores with the key: the request's span's, when it is recorded.
      traceContext() {
        if (o.storeTraceContext === false || !request.isRecording()) return undefined;
        const sc = request.spanContext();
        return api.isSpanContextValid(sc) ? traceparentOf(sc) : undefined;
      },
      // A replay's pg_idempotency.first_execution.age is worth a lookup() only for a recorded span.
      wantsFirstExecutionAge() { return o.firstExecutionAge !== false && span.isRecording(); },
      // fn() as the database call `fn` (idempotency.claim, ...), a CLIENT span.
      async sql(client, fn, call) {
        const p = client.connectionParameters || client;
        const a = {
          'db.system.name': 'postgresql', 'db.operation.name': 'SELECT', 'db.stored_procedure.name': fn,
        };
        if (p.database) a['db.namespace'] = p.database;
        if (p.host) a['server.address'] = p.host;
        if (p.port) a['server.port'] = Number(p.port);
        const db = tracer.startSpan(`SELECT ${fn}`, { kind: api.SpanKind.CLIENT, attributes: a }, context);
        try {
          return await call();
        } catch (err) {
          const sqlstate = typeof err.sqlstate === 'string' ? err.sqlstate : typeof err.code === 'string' ? err.code : 'XX000';
          db.setAttributes({ 'db.response.status_code': sqlstate, 'error.type': sqlstate });
          db.setStatus({ code: api.SpanStatusCode.ERROR, message: sqlstate });
          throw err;
        } finally {
          db.end();
        }
      },
      end(status) {
        span.setAttribute('http.response.status_code', status);
        if (status >= 500) {
          state.outcome = null;
          state.errorType = state.errorType ?? String(status);
        }
        if (state.outcome) span.setAttribute('pg_idempotency.outcome', state.outcome);
        if (state.scope !== null) span.setAttribute('pg_idempotency.scope', state.scope);
        if (state.attempt !== null && (state.outcome === 'claimed' || state.outcome === 'replay')) span.setAttribute('pg_idempotency.attempt', state.attempt);
        if (state.key !== null) {
          span.setAttribute('pg_idempotency.key_hash', keyHash(state.key));
          if (o.recordRawKey) span.setAttribute('pg_idempotency.key', state.key);
        }
        if (state.age !== null && state.outcome === 'replay') span.setAttribute('pg_idempotency.first_execution.age', state.age);
        if (state.storedTraceContext && (state.outcome === 'replay' || state.outcome === 'in_progress')) linkToFirstExecution();
        const labels = {};
        if (state.outcome) labels['pg_idempotency.outcome'] = state.outcome;
        if (state.errorType) {
          span.setAttribute('error.type', state.errorType);
          span.setStatus({ code: api.SpanStatusCode.ERROR, message: state.errorType });
          labels['error.type'] = state.errorType;
        }
        span.end();
        const m = metricsOf();
        m.requests.add(1, labels);
        m.duration.record(Number(process.hrtime.bigint() - started) / 1e9, labels);
      },
    };
  }

  // next() in the request's context, so that the route's own spans are its children.
  function run(observation, fn) {
    return api.context.with(observation.context, fn);
  }

  return { startRequest, run };
}

module.exports = { makeTelemetry, keyHash, spanContextOf, available: () => otel !== null };
