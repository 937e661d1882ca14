"""The C++ project's own load client (idempotency-demo-load: concurrent
duplicates, clients that time out and retry) against the Python demo service,
directly and through PgBouncer, as suite 80-pooler runs it against the C++ one:
every key that answered 201 made exactly one payment."""
from __future__ import annotations

import json
import subprocess

import psycopg
import pytest

from conftest import BUILD_DIR, conninfo, python_service, request, sql

LOAD_DB = "pg_idempotency_python_load"


@pytest.mark.parametrize("through", ["direct", "pgbouncer"])
def test_demo_load_client_against_the_python_service(through):
    with psycopg.connect(conninfo("postgres"), autocommit=True) as c:
        c.execute(f"DROP DATABASE IF EXISTS {LOAD_DB} WITH (FORCE)")
        c.execute(f"CREATE DATABASE {LOAD_DB}")
    db = conninfo(LOAD_DB)
    sql(db, "CREATE EXTENSION pg_idempotency")
    extra = ("--pooler",) if through == "pgbouncer" else ()
    service = python_service(conninfo(LOAD_DB, bouncer=through == "pgbouncer"), *extra, name=f"python-load-{through}")
    try:
        load = subprocess.run([str(BUILD_DIR / "idempotency-demo-load"), "--url", f"http://127.0.0.1:{service.port}",
                               "--keys", "20", "--dups", "8", "--concurrency", "16"],
                              capture_output=True, text=True, timeout=300)
        assert load.returncode == 0, load.stdout + load.stderr
        payments = sql(db, "SELECT count(*) FROM demo.payments")[0][0]
        keys = sql(db, "SELECT count(*) FROM idempotency.keys WHERE state = 'completed' AND response_status = 201")[0][0]
        assert payments == keys >= 20
        assert json.loads(request(service.port, "GET", "/payments/count").body) == {"count": payments}
    finally:
        service.stop()
        with psycopg.connect(conninfo("postgres"), autocommit=True) as c:
            c.execute(f"DROP DATABASE {LOAD_DB} WITH (FORCE)")
