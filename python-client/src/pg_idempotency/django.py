"""Idempotency-Key handling for Django views, in Django's own transaction.

    # settings.py
    MIDDLEWARE = [..., "pg_idempotency.django.IdempotencyMiddleware"]
    PG_IDEMPOTENCY_ROUTES = {
        ("POST", "/payments"): Options(scope=lambda req: "payments", fingerprint="json-body"),
    }   # or a callable(request) -> Options | None; PG_IDEMPOTENCY_DATABASE = "default"

The key is claimed on Django's database connection inside transaction.atomic(),
so the view (ORM or raw cursor) runs inside the transaction that holds the key
and its writes commit or roll back with it. The behaviour is the ASGI
middleware's (and the C++ and Node ones'): 400 without a valid key where it is
required, the same fingerprints, replay byte for byte with
"Idempotent-Replayed: true" (Set-Cookie included), 409 with Retry-After, 422, 503 when the database is lost. A
view that raises Reject, raises anything else or answers 500 or more stores
nothing. Django keeps one connection per thread, so the server's threads bound
the connections; PG_IDEMPOTENCY_MAX_CONNECTIONS = N bounds the requests of these
routes that use the database at once: a request waits at most
PG_IDEMPOTENCY_ACQUIRE_TIMEOUT seconds (5) for a slot, then gets 503 with
Retry-After (PG_IDEMPOTENCY_BUSY_RETRY_AFTER, 1), never an unbounded queue.

The SQL runs through Django's DB-API cursor, so any PostgreSQL driver Django
uses works (psycopg2 in Django 3.2, psycopg 3 from 4.2).

OpenTelemetry: the ASGI middleware's spans, attributes, database spans, replay
link and metrics (pg_idempotency.otel), on by default when opentelemetry-api
is installed. PG_IDEMPOTENCY_TELEMETRY = False turns them off; an
otel.Telemetry(...) chooses the providers and options (store_trace_context=False
for a database still at extension 1.0 or 1.1).
"""
from __future__ import annotations

import contextlib
import inspect
import threading
from http.cookies import SimpleCookie
from typing import Any, Callable, Optional

from django.conf import settings
from django.db import DatabaseError, InterfaceError, OperationalError, connections, transaction
from django.http import HttpRequest, HttpResponse

from . import _statements as st
from . import otel
from ._types import Response
from .http import (MALFORMED_JSON_STATES, MalformedJson, Options, Reject, Reply, RequestInfo, busy_reply, error_reply,
                   fingerprint_document, missing_key_reply, stored_headers, to_reply, transaction_options,
                   unavailable_reply, valid_key)

__all__ = ["IdempotencyMiddleware", "Options", "Reject", "transaction_options"]


class _Rollback(Exception):
    pass


def _to_django(reply: Reply) -> HttpResponse:
    response = HttpResponse(reply.body, status=reply.status)
    del response["Content-Type"]  # only the stored headers go out
    for name, value in reply.headers:
        if name.lower() == "set-cookie":
            response.cookies.load(value)
        elif name in response:
            response[name] = response[name] + ", " + value
        else:
            response[name] = value
    return response


def _headers_of(response: HttpResponse) -> list[tuple[str, str]]:
    out = list(response.items())
    out.extend(("Set-Cookie", morsel.OutputString()) for morsel in response.cookies.values())
    return out


def _sqlstate(exc: BaseException) -> str:
    cause = exc.__cause__ or exc
    return getattr(cause, "pgcode", None) or getattr(cause, "sqlstate", None) or ""


class IdempotencyMiddleware:
    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response
        self.routes = getattr(settings, "PG_IDEMPOTENCY_ROUTES", {})
        self.alias = getattr(settings, "PG_IDEMPOTENCY_DATABASE", "default")
        limit = getattr(settings, "PG_IDEMPOTENCY_MAX_CONNECTIONS", None)
        self.slots = threading.BoundedSemaphore(limit) if limit else None
        self.acquire_timeout = float(getattr(settings, "PG_IDEMPOTENCY_ACQUIRE_TIMEOUT", 5.0))
        self.busy_retry_after = int(getattr(settings, "PG_IDEMPOTENCY_BUSY_RETRY_AFTER", 1))
        self.telemetry = otel.make_telemetry(getattr(settings, "PG_IDEMPOTENCY_TELEMETRY", None))

    def _options(self, request: HttpRequest) -> Optional[Options]:
        if callable(self.routes):
            return self.routes(request)
        return self.routes.get((request.method, request.path))

    def process_exception(self, request: HttpRequest, exception: Exception) -> Optional[HttpResponse]:
        """A view's Reject answers without storing anything (rolled back)."""
        if not hasattr(request, "idempotency"):
            return None
        if isinstance(exception, Reject):
            request._idempotency_rejected = True
            return _to_django(error_reply(exception.status, exception.code, str(exception)))
        if isinstance(exception, DatabaseError) and _lost(connections[self.alias], exception, _sqlstate(exception)):
            # The view's own statement found the database gone: 503, rolled back.
            request._idempotency_lost = True
            return _to_django(unavailable_reply(str(exception)))
        return None

    def __call__(self, request: HttpRequest) -> HttpResponse:
        o = self._options(request)
        if o is None:
            return self.get_response(request)
        headers = {k.lower(): v for k, v in request.headers.items()}
        if self.telemetry is None or not o.key_header:
            return self._handle(o, request, headers, None)
        obs = self.telemetry.start(request.method, request.path, headers)
        obs.attach()  # the view's own spans become children
        response: Optional[HttpResponse] = None
        try:
            response = self._handle(o, request, headers, obs)
            return response
        finally:
            obs.end(response.status_code if response is not None else None)

    def _handle(self, o: Options, request: HttpRequest, headers: dict[str, str],
                obs: Optional[otel.Observation]) -> HttpResponse:
        key = request.headers.get(o.key_header) if o.key_header else None
        if (key is not None and not valid_key(key)) or (key is None and o.key_required):
            if obs:
                obs.outcome = "rejected"
            return _to_django(missing_key_reply(o))
        body = request.body
        info = RequestInfo(request.method, request.path, headers, body)
        try:
            document = None
            scope = None
            if key is not None:
                document = fingerprint_document(info.method, info.path, headers.get("content-type"), body, o.fingerprint)
                scope = o.scope(info) if o.scope else f"{info.method} {info.path}"
                if inspect.isawaitable(scope):
                    raise TypeError("idempotency: the Django middleware's scope callback must not be async")
                if obs:
                    obs.scope, obs.key = scope, key
        except MalformedJson as e:
            return _to_django(error_reply(400, "malformed_json", f"the request is not valid JSON: {e}"))
        except Reject as e:
            return _to_django(error_reply(e.status, e.code, str(e)))

        if self.slots is not None and not self.slots.acquire(timeout=self.acquire_timeout):
            if obs:
                obs.error_type = "08004"  # as the C++ pool's timeout: no connection could be had
            return _to_django(busy_reply(self.busy_retry_after))
        try:
            return self._serve(o, request, key, scope, document, obs)
        finally:
            if self.slots is not None:
                self.slots.release()

    def _serve(self, o: Options, request: HttpRequest, key: Optional[str], scope: Optional[str],
               document: Optional[str], obs: Optional[otel.Observation]) -> HttpResponse:
        connection = connections[self.alias]
        request.idempotency = None if key is None else {"scope": scope, "key": key, "token": None}
        in_view = False
        response: Optional[HttpResponse] = None
        try:
            try:
                with transaction.atomic(using=self.alias):
                    if key is not None:
                        result = self._claim(connection, o, scope, key, document, obs)
                        if not result.claimed:
                            return _to_django(to_reply(result))
                        request.idempotency["token"] = result.token
                    in_view = True
                    response = self.get_response(request)
                    in_view = False
                    if response.streaming:
                        response = HttpResponse(b"".join(response.streaming_content), status=response.status_code,
                                                headers=dict(response.items()))
                    if getattr(request, "_idempotency_rejected", False) or response.status_code >= 500:
                        raise _Rollback()
                    if key is not None:
                        stored = stored_headers(_headers_of(response), o.replay_headers)
                        params = st.finish_params(scope, key, result.token,
                                                  Response(response.status_code, response.content, stored))
                        with _observed(obs, connection, "idempotency.finish"), connection.cursor() as cur:
                            cur.execute(st.FINISH, params)
            except _Rollback:
                pass
            if getattr(request, "_idempotency_lost", False):
                connection.close()  # the next request connects again
            return response
        except DatabaseError as e:
            state = _sqlstate(e)
            if obs:
                obs.error_type = state or None
            if _lost(connection, e, state):
                if obs:
                    obs.error_type = state if state.startswith("08") else "08006"
                connection.close()  # the next request connects again
                return _to_django(unavailable_reply(str(e)))
            if not in_view and state in MALFORMED_JSON_STATES:
                return _to_django(error_reply(400, "malformed_json", f"the request is not valid JSON: {e}"))
            return _to_django(error_reply(500, "database_error", f"{state}: {e}"))

    def _claim(self, connection: Any, o: Options, scope: str, key: str, document: Optional[str],
               obs: Optional[otel.Observation]):
        """claim(), with its database span, the request's traceparent stored
        with the key and, on a replay, the first execution's age."""
        traceparent = obs.trace_context() if obs else None
        if traceparent is not None:
            sql, params = st.claim_params(scope, key, None, document, o.ttl, o.lease, o.wait, traceparent)
        else:
            sql, params = st.claim_params(scope, key, None, document, o.ttl, o.lease, o.wait)
        with _observed(obs, connection, "idempotency.claim"), connection.cursor() as cur:
            cur.execute(sql, params)
            result = st.decode_claim(cur.fetchone())
        if obs and obs.claim_answered(result):
            try:  # a failure here must not fail the replay: the age is just not known
                with transaction.atomic(using=self.alias):  # a savepoint: the claim's transaction stays usable
                    with _observed(obs, connection, "idempotency.lookup"), connection.cursor() as cur:
                        cur.execute(st.LOOKUP, (scope, key))
                        obs.first_execution(st.decode_lookup(cur.fetchone()))
            except DatabaseError:
                pass
        return result


def _observed(obs: Optional[otel.Observation], connection: Any, function: str) -> Any:
    """The database span of one idempotency.* call, or nothing without telemetry."""
    return obs.db(connection.connection, function) if obs else contextlib.nullcontext()


def _lost(connection: Any, exc: BaseException, state: str) -> bool:
    """Class 08, the shutdown codes of class 57, or a driver error without a
    SQLSTATE on a connection the driver has closed."""
    if state.startswith("08") or state in ("57P01", "57P02", "57P03"):
        return True
    raw = connection.connection
    if raw is None or getattr(raw, "closed", False) or getattr(raw, "broken", False):
        return True
    return isinstance(exc, (OperationalError, InterfaceError)) and not state
