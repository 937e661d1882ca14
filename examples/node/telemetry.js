'use strict';
// The demo's logs and OpenTelemetry set-up, as the C++ service's
// (idempotency-demo-server) and the Python one's:
//   - every line on stdout is one JSON object; a request's line carries its
//     trace_id (the request span's; without one, the incoming traceparent's;
//     otherwise a new one) and the key's hash, never the key;
//   - with @opentelemetry/api installed (an optional dependency) each request
//     is a SERVER span of this service, as an HTTP instrumentation makes it,
//     under which the pg-idempotency middleware adds its own span, database
//     spans and replay link (docs/observability.md);
//   - the SDK's standard environment OTEL_TRACES_EXPORTER=console prints every
//     span on stdout, one JSON object a line, when @opentelemetry/sdk-trace-node
//     is installed (OTEL_SERVICE_NAME names the service); without it, or
//     without the variable, no SDK is set up and the API's calls are no-ops.
const crypto = require('node:crypto');

function optional(name) {
  try {
    return require(name);  // eslint-disable-line global-require
  } catch {
    return null;
  }
}

const api = optional('@opentelemetry/api');
const TRACEPARENT = /^[0-9a-f]{2}-([0-9a-f]{32})-[0-9a-f]{16}-[0-9a-f]{2}$/;
const ZERO_TRACE = '0'.repeat(32);

function log(fields) {
  process.stdout.write(`${JSON.stringify({ time: new Date().toISOString(), ...fields })}\n`);
}

// A span as one JSON line: the fields the SDK's ConsoleSpanExporter shows.
class JsonLineSpanExporter {
  export(spans, done) {
    for (const s of spans) {
      const sc = s.spanContext();
      const parent = s.parentSpanContext ?? (s.parentSpanId ? { spanId: s.parentSpanId } : undefined);
      process.stdout.write(`${JSON.stringify({
        span: s.name,
        trace_id: sc.traceId,
        span_id: sc.spanId,
        parent_span_id: parent?.spanId,
        kind: s.kind,
        start_us: s.startTime[0] * 1e6 + Math.round(s.startTime[1] / 1e3),
        duration_us: s.duration[0] * 1e6 + Math.round(s.duration[1] / 1e3),
        attributes: s.attributes,
        status: s.status,
        links: s.links.map((l) => ({ trace_id: l.context.traceId, span_id: l.context.spanId })),
        service: s.resource?.attributes?.['service.name'],
      })}\n`);
    }
    done({ code: 0 });
  }

  shutdown() { return Promise.resolve(); }

  forceFlush() { return Promise.resolve(); }
}

// Sets the SDK up when the environment asks for console spans and the SDK is
// installed; returns what is on, for the start-up line.
function setupTelemetry(env = process.env) {
  if (!api) return 'off (no @opentelemetry/api)';
  const traces = (env.OTEL_TRACES_EXPORTER || '').split(',').map((s) => s.trim()).includes('console');
  if (!traces) return 'api (no exporter asked for)';
  const node = optional('@opentelemetry/sdk-trace-node');
  const base = optional('@opentelemetry/sdk-trace-base');
  const resources = optional('@opentelemetry/resources');
  if (!node || !base || !resources) return 'api (no @opentelemetry/sdk-trace-node: OTEL_TRACES_EXPORTER ignored)';
  // OTEL_SERVICE_NAME and OTEL_RESOURCE_ATTRIBUTES, over the SDK's defaults.
  const resource = resources.defaultResource().merge(resources.detectResources({ detectors: [resources.envDetector] }));
  const provider = new node.NodeTracerProvider({
    resource,
    spanProcessors: [new base.SimpleSpanProcessor(new JsonLineSpanExporter())],
  });
  provider.register();  // the global provider, the W3C propagator, the async context manager
  return 'sdk (traces on the console)';
}

function newTraceId() {
  return crypto.randomBytes(16).toString('hex');
}

// Express middleware: the request's span (with the API) and its log line.
function requestLog({ telemetry = true } = {}) {
  const tracer = telemetry && api ? api.trace.getTracer('pg-idempotency-node-example') : null;
  return (req, res, next) => {
    const started = process.hrtime.bigint();
    let span = null;
    if (tracer) {
      const parent = api.propagation.extract(api.ROOT_CONTEXT, req.headers);
      span = tracer.startSpan(`${req.method} ${req.path}`, {
        kind: api.SpanKind.SERVER,
        attributes: { 'http.request.method': req.method, 'url.path': req.path, 'url.scheme': 'http' },
      }, parent);
    }
    res.on('finish', () => {
      let traceId = span ? span.spanContext().traceId : ZERO_TRACE;
      if (traceId === ZERO_TRACE) {  // no SDK: the caller's trace, else a new one
        const m = TRACEPARENT.exec(req.get('traceparent') ?? '');
        traceId = m && m[1] !== ZERO_TRACE ? m[1] : newTraceId();
      }
      const key = req.get('Idempotency-Key');
      const line = {
        level: 'info', msg: 'request', method: req.method, path: req.path, status: res.statusCode,
        replayed: Boolean(res.getHeader('Idempotent-Replayed')),
        duration_ms: Math.round(Number(process.hrtime.bigint() - started) / 1e4) / 100,
        trace_id: traceId,
      };
      if (key !== undefined) line.key_hash = crypto.createHash('sha256').update(key, 'utf8').digest('hex');
      log(line);
    });
    if (span) {
      // On 'close', as the middleware ends its own span: the request's span ends last.
      res.once('close', () => {
        span.setAttribute('http.response.status_code', res.statusCode);
        if (res.statusCode >= 500) {
          span.setAttribute('error.type', String(res.statusCode));
          span.setStatus({ code: api.SpanStatusCode.ERROR });
        }
        setImmediate(() => span.end());
      });
    }
    if (!span) return next();
    return api.context.with(api.trace.setSpan(api.ROOT_CONTEXT, span), next);
  };
}

module.exports = { log, setupTelemetry, requestLog };
