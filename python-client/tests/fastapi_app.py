"""A FastAPI application on the ASGI middleware (served by uvicorn by test_asgi.py)."""
from __future__ import annotations

import argparse

import uvicorn
from fastapi import Depends, FastAPI, HTTPException, Request

from pg_idempotency.asgi import IdempotencyMiddleware, Options, make_pool


def database(request: Request):
    """The connection of the transaction that holds the key."""
    return request.state.db


def create_app(db: str):
    pool = make_pool(db, 4)
    # Debian 12 ships FastAPI 0.92, which has no lifespan= yet (docs/python.md)
    app = FastAPI(on_startup=[pool.open], on_shutdown=[pool.close])

    @app.post("/orders", status_code=201)
    async def create_order(order: dict, conn=Depends(database)):
        if "item" not in order:
            raise HTTPException(status_code=400, detail="item missing")
        cur = await conn.execute("INSERT INTO public.py_asgi_runs (route, key) VALUES ('fastapi', %s) RETURNING 1",
                                 (order["item"],))
        await cur.fetchone()
        return {"item": order["item"]}

    @app.get("/health")
    async def health():
        return {"ok": True}

    app.add_middleware(IdempotencyMiddleware, pool=pool,
                       routes={("POST", "/orders"): Options(fingerprint="json-body")})
    return app


if __name__ == "__main__":
    p = argparse.ArgumentParser()
    p.add_argument("--port", type=int)
    p.add_argument("--db")
    a = p.parse_args()
    uvicorn.run(create_app(a.db), host="127.0.0.1", port=a.port, log_level="warning")
