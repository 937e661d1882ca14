"""The ASGI middleware's OpenTelemetry spans, link and metrics, with the
SDK's InMemorySpanExporter and InMemoryMetricReader (providers handed to the
middleware, nothing global), on a Starlette app under uvicorn in this process,
against the PostgreSQL the PG* variables name: payment_scenario.run.
Skipped without the SDK."""
from __future__ import annotations

import asyncio
import contextlib
import socket
import threading
import time

import pytest

pytest.importorskip("opentelemetry.sdk")
import uvicorn  # noqa: E402
from starlette.applications import Starlette  # noqa: E402
from starlette.responses import JSONResponse  # noqa: E402
from starlette.routing import Route  # noqa: E402

import payment_scenario  # noqa: E402
from pg_idempotency import otel  # noqa: E402
from pg_idempotency.asgi import IdempotencyMiddleware, Options, make_pool  # noqa: E402

DB = "pg_idempotency_python_otel"
telemetry = payment_scenario.InMemoryTelemetry()


async def pay(request):
    key = request.headers.get("idempotency-key", "")
    await asyncio.get_running_loop().run_in_executor(None, payment_scenario.hold, key)
    body = await request.json()
    return JSONResponse({"id": 7, **body}, status_code=201)


@pytest.fixture(scope="module")
def base():
    payment_scenario.fresh_database(DB)
    pool = make_pool(f"dbname={DB}", size=4)

    @contextlib.asynccontextmanager
    async def lifespan(_app):
        await pool.open()
        yield
        await pool.close()

    app = Starlette(routes=[Route("/pay", pay, methods=["POST"])], lifespan=lifespan)
    app.add_middleware(IdempotencyMiddleware, pool=pool, routes={("POST", "/pay"): Options(scope=lambda r: "otel")},
                       telemetry=telemetry.telemetry)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    for _ in range(500):
        if server.started:
            break
        time.sleep(0.01)
    assert server.started
    yield port
    server.should_exit = True
    thread.join(10)


def test_claimed_replay_in_progress_mismatch_link_and_metrics(base):
    payment_scenario.run(base, DB, telemetry.exporter, telemetry.reader)


def test_without_opentelemetry_nothing_changes():
    assert otel.make_telemetry(False) is None
    assert otel.span_context_of("00-" + "0" * 32 + "-" + "1" * 16 + "-01") is None
    assert otel.span_context_of("garbage") is None
