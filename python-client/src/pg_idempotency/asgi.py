"""Idempotency-Key handling for any ASGI application (Starlette, FastAPI),
on psycopg 3's AsyncConnectionPool.

    pool = pg_idempotency.asgi.make_pool("dbname=app", size=16)

    @contextlib.asynccontextmanager
    async def lifespan(app):
        async with pool:               # opened at start-up, closed at shutdown
            yield

    app = Starlette(routes=[Route("/payments", create_payment, methods=["POST"])], lifespan=lifespan)
    app.add_middleware(IdempotencyMiddleware, pool=pool, routes={
        ("POST", "/payments"): Options(scope=lambda req: "payments", fingerprint="json-body"),
        ("GET", "/payments/count"): transaction_options(),
    })

    async def create_payment(request):
        db = request.state.db          # the transaction that holds the key
        await db.execute("INSERT ...")
        return JSONResponse({...}, status_code=201)

For each request of a listed route the middleware reads the key header (400
when required and absent or not 1-255 bytes), takes the scope, fingerprints
the request, waits at most acquire_timeout for a pooled connection (then 503
with Retry-After, never an unbounded queue), claims the key, runs the route
on that connection inside the transaction that holds the key, stores its
response (status, body, the headers worth replaying) and commits before a
byte of the answer goes out. A completed key is replayed byte for byte with
"Idempotent-Replayed: true"; a key held by another request answers 409 with
Retry-After; a key used with another request 422; a lost database 503 (the
connection is dropped, the next request gets a new one). A route that raises
Reject, raises anything else or answers 500 or more stores nothing: the work
and the claim roll back. Requests of other routes pass through untouched.
"""
from __future__ import annotations

import inspect
import select
from typing import Any, Awaitable, Callable, Mapping, Optional, Union

import psycopg
from psycopg import pq

from . import aio
from .errors import IdempotencyError, is_connection_lost
from . import otel
from .http import (MALFORMED_JSON_STATES, MalformedJson, Options, Reject, Reply, RequestInfo, busy_reply,
                   error_reply, fingerprint_document, missing_key_reply, stored_headers, to_reply,
                   transaction_options, unavailable_reply, valid_key)
from ._types import Response

__all__ = ["IdempotencyMiddleware", "Options", "Reject", "make_pool", "transaction_options"]

Routes = Union[Mapping[tuple[str, str], Options], Callable[[dict], Optional[Options]]]


def make_pool(conninfo: str, size: int = 10, *, pooler: bool = False, **kwargs: Any):
    """An AsyncConnectionPool (not yet open: await pool.open() at start-up).
    pooler=True: conninfo is a transaction pooler (PgBouncer pool_mode =
    transaction), so psycopg never prepares a statement (prepare_threshold=None)."""
    from psycopg_pool import AsyncConnectionPool

    connect_kwargs = dict(kwargs.pop("kwargs", {}) or {})
    if pooler:
        connect_kwargs["prepare_threshold"] = None
    return AsyncConnectionPool(conninfo, min_size=kwargs.pop("min_size", 1), max_size=size, open=False,
                               kwargs=connect_kwargs, **kwargs)


class _Rollback(Exception):
    """The route answered without wanting it stored: roll back, send as is."""


def _alive(conn: psycopg.AsyncConnection) -> bool:
    """An idle connection whose server went away has the FATAL message and EOF
    waiting on its socket: read them without blocking so psycopg notices."""
    pg = conn.pgconn
    try:
        for _ in range(3):
            if pg.status != pq.ConnStatus.OK:
                break
            readable, _, _ = select.select([pg.socket], [], [], 0)
            if not readable:
                break
            pg.consume_input()
            while pg.notifies() is not None:
                pass
    except (psycopg.Error, OSError, ValueError):
        return False
    return pg.status == pq.ConnStatus.OK and conn.info.transaction_status == pq.TransactionStatus.IDLE


class _Captured:
    """The route's answer, held until its response is stored and committed."""

    def __init__(self) -> None:
        self.status: Optional[int] = None
        self.headers: list[tuple[bytes, bytes]] = []
        self.chunks: list[bytes] = []
        self.trailers = False

    async def send(self, message: dict) -> None:
        if message["type"] == "http.response.start":
            self.status = int(message["status"])
            self.headers = [(bytes(n), bytes(v)) for n, v in message.get("headers", [])]
        elif message["type"] == "http.response.body":
            self.chunks.append(bytes(message.get("body", b"")))

    @property
    def body(self) -> bytes:
        return b"".join(self.chunks)

    def text_headers(self) -> list[tuple[str, str]]:
        return [(n.decode("latin-1"), v.decode("latin-1")) for n, v in self.headers]


async def _send_reply(send: Callable[[dict], Awaitable[None]], reply: Reply, raw_headers=None) -> None:
    headers = raw_headers if raw_headers is not None else [
        (n.lower().encode("latin-1"), v.encode("latin-1")) for n, v in reply.headers]
    if raw_headers is None:
        headers.append((b"content-length", str(len(reply.body)).encode()))
    await send({"type": "http.response.start", "status": reply.status, "headers": headers})
    await send({"type": "http.response.body", "body": reply.body, "more_body": False})


class IdempotencyMiddleware:
    """routes: {(METHOD, "/path"): Options} or a callable(asgi_scope) ->
    Options | None. acquire_timeout: the longest wait for a pooled connection
    (seconds) before 503; busy_retry_after: its Retry-After. telemetry:
    OpenTelemetry spans and metrics for requests with a key (pg_idempotency.otel),
    on by default when opentelemetry-api is installed; False: off;
    otel.Telemetry(store_trace_context=False) for a database still at
    extension 1.0 or 1.1."""

    def __init__(self, app: Any, *, pool: Any, routes: Routes, acquire_timeout: float = 5.0,
                 busy_retry_after: int = 1, telemetry: Any = None) -> None:
        self.app = app
        self.telemetry = otel.make_telemetry(telemetry)
        self.pool = pool
        self.routes = routes
        self.acquire_timeout = acquire_timeout
        self.busy_retry_after = busy_retry_after

    def _options(self, scope: dict) -> Optional[Options]:
        if callable(self.routes):
            return self.routes(scope)
        return self.routes.get((scope["method"], scope["path"]))

    async def __call__(self, scope: dict, receive: Callable, send: Callable) -> None:
        options = self._options(scope) if scope["type"] == "http" else None
        if options is None:
            return await self.app(scope, receive, send)
        await self._serve(options, scope, receive, send)

    async def _acquire(self) -> Optional[psycopg.AsyncConnection]:
        from psycopg_pool import PoolTimeout

        for _ in range(4):
            try:
                conn = await self.pool.getconn(timeout=self.acquire_timeout)
            except PoolTimeout:
                return None
            if _alive(conn):
                return conn
            await self.pool.putconn(conn)  # broken: the pool closes it and makes another
        raise IdempotencyError("08006", "idempotency: no live database connection could be taken from the pool")

    async def _serve(self, o: Options, scope: dict, receive: Callable, send: Callable) -> None:
        headers = {n.decode("latin-1").lower(): v.decode("latin-1") for n, v in scope.get("headers", [])}
        if self.telemetry is None or not o.key_header:
            return await self._serve_observed(o, scope, headers, receive, send, None)
        obs = self.telemetry.start(scope["method"], scope["path"], headers)
        obs.attach()
        status: list[int] = []

        async def observed_send(message: dict) -> None:
            if message["type"] == "http.response.start":
                status.append(int(message["status"]))
            await send(message)

        try:
            await self._serve_observed(o, scope, headers, receive, observed_send, obs)
        finally:
            obs.end(status[0] if status else None)

    async def _serve_observed(self, o: Options, scope: dict, headers: dict[str, str], receive: Callable,
                              send: Callable, obs: Optional["otel.Observation"]) -> None:
        key = headers.get(o.key_header.lower()) if o.key_header else None
        if (key is not None and not valid_key(key)) or (key is None and o.key_required):
            if obs:
                obs.outcome = "rejected"
            return await _send_reply(send, missing_key_reply(o))

        # The whole body first: the fingerprint needs it, the route reads it again.
        chunks, size, more = [], 0, True
        while more:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > o.max_body:
                return await _send_reply(send, error_reply(413, "payload_too_large",
                                                           f"the request body is larger than {o.max_body} bytes"))
            chunks.append(chunk)
            more = message.get("more_body", False)
        body = b"".join(chunks)
        body_sent = False

        async def replay_receive() -> dict:
            nonlocal body_sent
            if not body_sent:
                body_sent = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        info = RequestInfo(scope["method"], scope["path"], headers, body)
        try:
            document = None
            if key is not None:
                document = fingerprint_document(info.method, info.path, headers.get("content-type"), body,
                                                o.fingerprint)
            scope_name = None
            if key is not None:
                scope_name = o.scope(info) if o.scope else f"{info.method} {info.path}"
                if inspect.isawaitable(scope_name):
                    scope_name = await scope_name
                if obs:
                    obs.scope, obs.key = scope_name, key
        except MalformedJson as e:
            return await _send_reply(send, error_reply(400, "malformed_json", f"the request is not valid JSON: {e}"))
        except Reject as e:
            return await _send_reply(send, error_reply(e.status, e.code, str(e)))

        try:
            conn = await self._acquire()
        except IdempotencyError as e:
            if obs:
                obs.error_type = "08006"
            return await _send_reply(send, unavailable_reply(str(e)))
        if conn is None:
            if obs:
                obs.error_type = "08004"  # as the C++ pool's timeout: no connection could be had
            return await _send_reply(send, busy_reply(self.busy_retry_after))

        captured = _Captured()
        in_handler = False
        reply: Optional[Reply] = None
        try:
            try:
                async with conn.transaction():
                    token = None
                    if key is not None:
                        result = await self._claim(conn, scope_name, key, document, o, obs)
                        if not result.claimed:
                            reply = to_reply(result)
                        token = result.token
                    if reply is None:
                        state = dict(scope.get("state") or {})
                        state["db"] = conn
                        state["idempotency"] = None if key is None else {"scope": scope_name, "key": key,
                                                                          "token": token}
                        in_handler = True
                        await self.app({**scope, "state": state}, replay_receive, captured.send)
                        in_handler = False
                        if captured.status is None:
                            raise RuntimeError("the route sent no response")
                        if captured.status >= 500:
                            raise _Rollback()
                        if token is not None:
                            stored = stored_headers(captured.text_headers(), o.replay_headers)
                            response = Response(captured.status, captured.body, stored)
                            if obs:
                                with obs.db(conn, "idempotency.finish"):
                                    await aio.finish(conn, scope_name, key, token, response)
                            else:
                                await aio.finish(conn, scope_name, key, token, response)
            except _Rollback:
                pass  # rolled back; the route's own answer goes out as it is
            if reply is None:
                reply = Reply(captured.status or 500, [], captured.body)
                return await _send_reply(send, reply, list(captured.headers))
            return await _send_reply(send, reply)
        except Reject as e:
            return await _send_reply(send, error_reply(e.status, e.code, str(e)))
        except (IdempotencyError, psycopg.Error) as e:
            state = getattr(e, "sqlstate", None) or ""
            if obs:
                obs.error_type = state or None
            if is_connection_lost(conn, e) or (isinstance(e, IdempotencyError) and e.connection_error):
                if obs:
                    obs.error_type = state if state.startswith("08") else "08006"
                return await _send_reply(send, unavailable_reply(str(e)))
            if not in_handler and state in MALFORMED_JSON_STATES:
                return await _send_reply(send, error_reply(400, "malformed_json",
                                                           f"the request is not valid JSON: {e}"))
            return await _send_reply(send, error_reply(500, "database_error", f"{state}: {e}"))
        except Exception as e:  # the route failed: rolled back, nothing stored
            if is_connection_lost(conn, e):
                return await _send_reply(send, unavailable_reply(str(e)))
            return await _send_reply(send, error_reply(500, "internal_error", str(e) or type(e).__name__))
        finally:
            await self.pool.putconn(conn)

    async def _claim(self, conn: psycopg.AsyncConnection, scope_name: str, key: str, document: Optional[str],
                     o: Options, obs: Optional["otel.Observation"]):
        """claim(), with its database span, the request's traceparent stored
        with the key and, on a replay, the first execution's age."""
        kwargs: dict[str, Any] = dict(ttl=o.ttl, lease=o.lease, wait=o.wait)
        if document is not None:
            kwargs["request_json"] = document
        if obs is None:
            return await aio.claim(conn, scope_name, key, **kwargs)
        traceparent = obs.trace_context()
        if traceparent is not None:
            kwargs["trace_context"] = traceparent
        with obs.db(conn, "idempotency.claim"):
            result = await aio.claim(conn, scope_name, key, **kwargs)
        if obs.claim_answered(result):
            try:  # a failure here must not fail the replay: the age is just not known
                async with conn.transaction():  # a savepoint: a failed lookup leaves the claim's transaction usable
                    with obs.db(conn, "idempotency.lookup"):
                        obs.first_execution(await aio.lookup(conn, scope_name, key))
            except (IdempotencyError, psycopg.Error):
                pass
        return result
