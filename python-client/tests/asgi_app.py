"""A Starlette application that exercises the ASGI middleware's behaviour table
(served by uvicorn in a subprocess by test_asgi.py)."""
from __future__ import annotations

import argparse
import contextlib
import json

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from pg_idempotency.asgi import IdempotencyMiddleware, Options, Reject, make_pool

BINARY = bytes(range(256))


async def record(request: Request, what: str) -> None:
    await request.state.db.execute("INSERT INTO public.py_asgi_runs (route, key) VALUES (%s, %s)",
                                   (what, request.headers.get("idempotency-key")))


async def faithful(request: Request) -> Response:
    await record(request, "faithful")
    r = Response(BINARY, status_code=201, media_type="application/octet-stream",
                 headers={"Location": "/things/7", "X-Custom": "a"})
    r.set_cookie("session", "s1", path="/")
    r.set_cookie("theme", "dark", httponly=True)
    return r


async def default_headers(request: Request) -> Response:
    r = JSONResponse({"ok": True}, headers={"X-Custom": "kept"})
    r.set_cookie("session", "s1")
    return r


async def optional(request: Request) -> Response:
    await record(request, "optional")
    return JSONResponse({"keyed": request.state.idempotency is not None})


async def tenant(request: Request) -> Response:
    await record(request, "tenant")
    return JSONResponse({"tenant": request.headers["x-tenant"]}, status_code=201)


async def in_transaction(request: Request) -> Response:
    """What the route sees of its own key: the row its transaction claimed."""
    info = request.state.idempotency
    cur = await request.state.db.execute(
        "SELECT state::text, token FROM idempotency.keys WHERE scope = %s AND key = %s", (info["scope"], info["key"]))
    state, token = await cur.fetchone()
    return JSONResponse({"state": state, "same_token": token == info["token"]})


async def fail500(request: Request) -> Response:
    await record(request, "fail500")
    return JSONResponse({"error": "upstream"}, status_code=502)


async def reject(request: Request) -> Response:
    await record(request, "reject")
    raise Reject(400, "invalid_request", "nope")


async def crash(request: Request) -> Response:
    await record(request, "crash")
    raise RuntimeError("the route crashed")


async def slow(request: Request) -> Response:
    seconds = json.loads(await request.body()).get("sleep", 0)
    await request.state.db.execute("SELECT pg_sleep(%s)", (seconds,))
    await record(request, "slow")
    return JSONResponse({"slept": seconds}, status_code=201)


async def raw(request: Request) -> Response:
    return Response(str(len(await request.body())), status_code=201, media_type="text/plain")


async def plain(request: Request) -> Response:
    return JSONResponse({"db": "db" in request.state._state})


def create_app(db: str, pool_size: int, acquire_timeout: float):
    pool = make_pool(db, pool_size)
    routes = [Route("/faithful", faithful, methods=["POST"]), Route("/default-headers", default_headers, methods=["POST"]),
              Route("/optional", optional, methods=["POST"]), Route("/tenant", tenant, methods=["POST"]),
              Route("/in-tx", in_transaction, methods=["POST"]), Route("/fail500", fail500, methods=["POST"]),
              Route("/reject", reject, methods=["POST"]), Route("/crash", crash, methods=["POST"]),
              Route("/slow", slow, methods=["POST"]), Route("/raw", raw, methods=["POST"]),
              Route("/plain", plain, methods=["GET"]), Route("/waiting", slow, methods=["POST"]), Route("/payments/count", plain, methods=["GET"])]

    def tenant_scope(req):
        if "x-tenant" not in req.headers:
            raise Reject(401, "unauthenticated", "no tenant")
        return "tenant:" + req.headers["x-tenant"]

    policy = {
        ("POST", "/faithful"): Options(replay_headers=["Set-Cookie", "Location", "Content-Type", "X-Custom"]),
        ("POST", "/default-headers"): Options(),
        ("POST", "/optional"): Options(key_required=False),
        ("POST", "/tenant"): Options(scope=tenant_scope),
        ("POST", "/in-tx"): Options(),
        ("POST", "/fail500"): Options(),
        ("POST", "/reject"): Options(),
        ("POST", "/crash"): Options(),
        ("POST", "/slow"): Options(fingerprint="none"),
        ("POST", "/raw"): Options(),
        ("POST", "/waiting"): Options(fingerprint="none", wait=20),  # wait for the running request
    }
    @contextlib.asynccontextmanager
    async def lifespan(_app):  # (Starlette 1.0 has no on_startup/on_shutdown)
        async with pool:
            yield

    app = Starlette(routes=routes, lifespan=lifespan)
    app.add_middleware(IdempotencyMiddleware, pool=pool, routes=policy, acquire_timeout=acquire_timeout)
    return app


if __name__ == "__main__":
    p = argparse.ArgumentParser()
    p.add_argument("--port", type=int)
    p.add_argument("--db")
    p.add_argument("--pool", type=int, default=4)
    p.add_argument("--acquire-timeout", type=float, default=5.0)
    a = p.parse_args()
    uvicorn.run(create_app(a.db, a.pool, a.acquire_timeout), host="127.0.0.1", port=a.port, log_level="warning")
