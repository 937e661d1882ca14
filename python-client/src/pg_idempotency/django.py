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
"""
from __future__ import annotations

import inspect
import threading
from http.cookies import SimpleCookie
from typing import Any, Callable, Optional

from django.conf import settings
from django.db import DatabaseError, InterfaceError, OperationalError, connections, transaction
from django.http import HttpRequest, HttpResponse

from . import _statements as st
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
        key = request.headers.get(o.key_header) if o.key_header else None
        if (key is not None and not valid_key(key)) or (key is None and o.key_required):
            return _to_django(missing_key_reply(o))
        body = request.body
        headers = {k.lower(): v for k, v in request.headers.items()}
        info = RequestInfo(request.method, request.path, headers, body)
        try:
            document = None
            scope = None
            if key is not None:
                document = fingerprint_document(info.method, info.path, headers.get("content-type"), body, o.fingerprint)
                scope = o.scope(info) if o.scope else f"{info.method} {info.path}"
                if inspect.isawaitable(scope):
                    raise TypeError("idempotency: the Django middleware's scope callback must not be async")
        except MalformedJson as e:
            return _to_django(error_reply(400, "malformed_json", f"the request is not valid JSON: {e}"))
        except Reject as e:
            return _to_django(error_reply(e.status, e.code, str(e)))

        if self.slots is not None and not self.slots.acquire(timeout=self.acquire_timeout):
            return _to_django(busy_reply(self.busy_retry_after))
        try:
            return self._serve(o, request, key, scope, document)
        finally:
            if self.slots is not None:
                self.slots.release()

    def _serve(self, o: Options, request: HttpRequest, key: Optional[str], scope: Optional[str],
               document: Optional[str]) -> HttpResponse:
        connection = connections[self.alias]
        request.idempotency = None if key is None else {"scope": scope, "key": key, "token": None}
        in_view = False
        response: Optional[HttpResponse] = None
        try:
            try:
                with transaction.atomic(using=self.alias):
                    if key is not None:
                        with connection.cursor() as cur:
                            sql, params = st.claim_params(scope, key, None, document, o.ttl, o.lease, o.wait)
                            if document is None:
                                sql = st.CLAIM
                            cur.execute(sql, params)
                            result = st.decode_claim(cur.fetchone())
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
                        with connection.cursor() as cur:
                            cur.execute(st.FINISH, st.finish_params(scope, key, result.token,
                                                                    Response(response.status_code,
                                                                             response.content, stored)))
            except _Rollback:
                pass
            if getattr(request, "_idempotency_lost", False):
                connection.close()  # the next request connects again
            return response
        except DatabaseError as e:
            state = _sqlstate(e)
            if _lost(connection, e, state):
                connection.close()  # the next request connects again
                return _to_django(unavailable_reply(str(e)))
            if not in_view and state in MALFORMED_JSON_STATES:
                return _to_django(error_reply(400, "malformed_json", f"the request is not valid JSON: {e}"))
            return _to_django(error_reply(500, "database_error", f"{state}: {e}"))


def _lost(connection: Any, exc: BaseException, state: str) -> bool:
    """Class 08, the shutdown codes of class 57, or a driver error without a
    SQLSTATE on a connection the driver has closed."""
    if state.startswith("08") or state in ("57P01", "57P02", "57P03"):
        return True
    raw = connection.connection
    if raw is None or getattr(raw, "closed", False) or getattr(raw, "broken", False):
        return True
    return isinstance(exc, (OperationalError, InterfaceError)) and not state
