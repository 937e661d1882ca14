"""OpenTelemetry traces and metrics of the ASGI and Django middleware, through
opentelemetry-api when the application has it installed (optional); without
it, or with the API but no SDK, nothing is recorded. The names are the C++
middleware's (<idempotency/opentelemetry.hpp>) and the Node package's:

Traces. Each request through the middleware is a span: a SERVER span
"POST /payments" (parent: the incoming traceparent) when nothing traces the
request yet, else an INTERNAL child "pg_idempotency POST /payments" of the
active span (e.g. an ASGI instrumentation's server span), carrying
  pg_idempotency.outcome   claimed | replay | in_progress | mismatch | rejected
  pg_idempotency.scope, pg_idempotency.attempt (claimed, replay)
  pg_idempotency.key_hash  lower-case hex SHA-256 of the key
  pg_idempotency.key       only with record_raw_key=True (keys can be sensitive)
Each idempotency.* call is a CLIENT span below it ("SELECT idempotency.claim":
db.system.name = postgresql, db.operation.name, db.stored_procedure.name,
db.namespace, server.address/port, and db.response.status_code = the SQLSTATE
and error.type on failure). The claim stores the request span's traceparent
with the key (extension 1.2; store_trace_context=False for a database at 1.0
or 1.1); a replay (or a 409 whose holder is visible) adds an INTERNAL child
span "pg_idempotency replay" with a span link to the span that did the work
and pg_idempotency.first_execution.age (seconds; one lookup() per recorded
replay, first_execution_age=False saves it). A failed request (5xx) has no
outcome; error.type says why and its span status is ERROR.

Metrics (meter "pg_idempotency"): pg_idempotency.requests (counter,
{request}) and pg_idempotency.request.duration (histogram, s), both by
pg_idempotency.outcome (and error.type for a failed request).
"""
from __future__ import annotations

import hashlib
import re
import time
from contextlib import contextmanager
from datetime import datetime, timezone
from typing import Any, Iterator, Optional

try:
    from opentelemetry import context as _context
    from opentelemetry import metrics as _metrics
    from opentelemetry import propagate as _propagate
    from opentelemetry import trace as _trace
except ImportError:  # not installed: no telemetry
    _trace = None

NAME = "pg_idempotency"
_TRACEPARENT = re.compile(r"^00-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})$")


def available() -> bool:
    return _trace is not None


def key_hash(key: str) -> str:
    return hashlib.sha256(key.encode("utf-8")).hexdigest()


def _version() -> str:
    try:
        from importlib.metadata import version
        return version("pg-idempotency")
    except Exception:  # running from a source tree
        return ""


def _sqlstate_of(e: BaseException) -> str:
    """psycopg 3's sqlstate, psycopg2's pgcode, also under Django's wrapper."""
    for x in (e, e.__cause__):
        state = getattr(x, "sqlstate", None) or getattr(x, "pgcode", None)
        if state:
            return str(state)
    return "XX000"


def span_context_of(traceparent: Optional[str]) -> Any:
    """The span context a stored traceparent names, or None when malformed."""
    m = _TRACEPARENT.match(traceparent or "")
    if not m or int(m.group(1), 16) == 0 or int(m.group(2), 16) == 0:
        return None
    return _trace.SpanContext(int(m.group(1), 16), int(m.group(2), 16), is_remote=True,
                              trace_flags=_trace.TraceFlags(int(m.group(3), 16)))


class Telemetry:
    """The middleware's spans and metrics; the providers default to the global
    ones (looked up when first used, after the SDK was set up)."""

    def __init__(self, *, tracer_provider: Any = None, meter_provider: Any = None, record_raw_key: bool = False,
                 store_trace_context: bool = True, first_execution_age: bool = True) -> None:
        self.tracer_provider = tracer_provider
        self.meter_provider = meter_provider
        self.record_raw_key = record_raw_key
        self.store_trace_context = store_trace_context
        self.first_execution_age = first_execution_age
        self._tracer = None
        self._instruments: Optional[tuple[Any, Any, Any]] = None

    def tracer(self) -> Any:
        if self._tracer is None:
            self._tracer = _trace.get_tracer(NAME, _version(), tracer_provider=self.tracer_provider)
        return self._tracer

    def instruments(self) -> tuple[Any, Any]:
        provider = self.meter_provider or _metrics.get_meter_provider()
        if self._instruments is None or self._instruments[0] is not provider:
            meter = provider.get_meter(NAME, _version())
            self._instruments = (
                provider,
                meter.create_counter("pg_idempotency.requests", unit="{request}",
                                     description="Requests with an idempotency key, by outcome"),
                meter.create_histogram("pg_idempotency.request.duration", unit="s",
                                       description="Duration of requests with an idempotency key, by outcome"),
            )
        return self._instruments[1], self._instruments[2]

    def start(self, method: str, path: str, headers: dict[str, str]) -> "Observation":
        return Observation(self, method, path, headers)


def make_telemetry(option: Any) -> Optional[Telemetry]:
    """None (default) or True: on with the global providers when
    opentelemetry-api is installed; False: off; a Telemetry: that one."""
    if option is False or _trace is None:
        return None
    return option if isinstance(option, Telemetry) else Telemetry()


class Observation:
    """One request: its span, the database spans below it, its metrics."""

    def __init__(self, telemetry: Telemetry, method: str, path: str, headers: dict[str, str]) -> None:
        self.t = telemetry
        self.started = time.perf_counter()
        self.start_ns = time.time_ns()
        tracer = telemetry.tracer()
        attributes = {"http.request.method": method, "url.path": path}
        active = _trace.get_current_span()
        if active.get_span_context().is_valid:
            self.span = tracer.start_span(f"{NAME} {method} {path}", kind=_trace.SpanKind.INTERNAL,
                                          attributes=attributes)
            self.request_span = active
        else:
            parent = _propagate.extract(headers)
            self.span = tracer.start_span(f"{method} {path}", context=parent, kind=_trace.SpanKind.SERVER,
                                          attributes={**attributes, "url.scheme": "http", "http.route": path})
            self.request_span = self.span
        self.context = _trace.set_span_in_context(self.span)
        self.outcome: Optional[str] = None
        self.scope: Optional[str] = None
        self.key: Optional[str] = None
        self.attempt: Optional[int] = None
        self.error_type: Optional[str] = None
        self.stored_trace_context: Optional[str] = None
        self.age: Optional[float] = None
        self._token = None

    def attach(self) -> None:
        self._token = _context.attach(self.context)  # the route's own spans become children

    def trace_context(self) -> Optional[str]:
        """The traceparent claim() stores: the request span's, when it is recorded."""
        if not self.t.store_trace_context or not self.request_span.is_recording():
            return None
        sc = self.request_span.get_span_context()
        if not sc.is_valid:
            return None
        return f"00-{sc.trace_id:032x}-{sc.span_id:016x}-{int(sc.trace_flags):02x}"

    def wants_first_execution_age(self) -> bool:
        return self.t.first_execution_age and self.span.is_recording()

    def claim_answered(self, result: Any) -> bool:
        """Notes what claim() answered; True when the first execution's age
        is wanted (a replay whose span is recorded): then look the key up and
        pass the record to first_execution()."""
        self.outcome, self.attempt = result.outcome.value, result.attempt
        self.stored_trace_context = result.trace_context
        return bool(result.replayed) and self.wants_first_execution_age()

    def first_execution(self, record: Any) -> None:
        """The age of the stored answer, from lookup()'s record (None: unknown)."""
        if record is not None and record.completed_at is not None:
            self.age = (datetime.now(timezone.utc) - record.completed_at).total_seconds()

    @contextmanager
    def db(self, conn: Any, function: str) -> Iterator[None]:
        """A CLIENT span for one idempotency.* call on conn (a psycopg 3 or
        psycopg2 connection); a plain context manager, so that it wraps an
        await (ASGI) as well as a blocking call (Django)."""
        a: dict[str, Any] = {"db.system.name": "postgresql", "db.operation.name": "SELECT",
                             "db.stored_procedure.name": function}
        try:
            info = conn.info
            if info.dbname:
                a["db.namespace"] = info.dbname
            if info.host:
                a["server.address"] = info.host
            if info.port:
                a["server.port"] = int(info.port)
        except Exception:
            pass
        span = self.t.tracer().start_span(f"SELECT {function}", context=self.context, kind=_trace.SpanKind.CLIENT,
                                          attributes=a)
        try:
            yield
        except Exception as e:
            state = _sqlstate_of(e)
            span.set_attributes({"db.response.status_code": state, "error.type": state})
            span.set_status(_trace.Status(_trace.StatusCode.ERROR, state))
            raise
        finally:
            span.end()

    def end(self, status: Optional[int]) -> None:
        if self._token is not None:
            _context.detach(self._token)
            self._token = None
        span = self.span
        if status is not None:
            span.set_attribute("http.response.status_code", status)
        if status is None or status >= 500:
            self.outcome = None
            self.error_type = self.error_type or (str(status) if status else "incomplete")
        if self.outcome:
            span.set_attribute("pg_idempotency.outcome", self.outcome)
        if self.scope is not None:
            span.set_attribute("pg_idempotency.scope", self.scope)
        if self.attempt and self.outcome in ("claimed", "replay"):
            span.set_attribute("pg_idempotency.attempt", self.attempt)
        if self.key is not None:
            span.set_attribute("pg_idempotency.key_hash", key_hash(self.key))
            if self.t.record_raw_key:
                span.set_attribute("pg_idempotency.key", self.key)
        if self.age is not None and self.outcome == "replay":
            span.set_attribute("pg_idempotency.first_execution.age", self.age)
        if self.stored_trace_context and self.outcome in ("replay", "in_progress"):
            self._link_to_first_execution()
        labels: dict[str, str] = {}
        if self.outcome:
            labels["pg_idempotency.outcome"] = self.outcome
        if self.error_type:
            span.set_attribute("error.type", self.error_type)
            span.set_status(_trace.Status(_trace.StatusCode.ERROR, self.error_type))
            labels["error.type"] = self.error_type
        span.end()
        requests, duration = self.t.instruments()
        requests.add(1, labels)
        duration.record(time.perf_counter() - self.started, labels)

    def _link_to_first_execution(self) -> None:
        # Links are given when a span starts, and the stored context is known
        # once the claim answered: hence a child span that carries the link.
        linked = span_context_of(self.stored_trace_context)
        if linked is None:
            return
        a: dict[str, Any] = {"pg_idempotency.outcome": self.outcome or ""}
        if self.key is not None:
            a["pg_idempotency.key_hash"] = key_hash(self.key)
        if self.age is not None:
            a["pg_idempotency.first_execution.age"] = self.age
        self.t.tracer().start_span(f"{NAME} {self.outcome or 'link'}", context=self.context,
                                   kind=_trace.SpanKind.INTERNAL, attributes=a, links=[_trace.Link(linked)],
                                   start_time=self.start_ns).end()
