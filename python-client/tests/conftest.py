"""Fixtures of the Python suite: real servers only. scripts/suites/75-python.sh
starts PostgreSQL (PG* exported), PgBouncer (BOUNCER_PORT) and builds the C++
demo (BUILD_DIR) and the Node example (REPO_ROOT/examples/node); these tests
start the HTTP services and redis-server themselves, on free loopback ports,
and stop them."""
from __future__ import annotations

import http.client
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import psycopg
import pytest

REPO_ROOT = Path(os.environ["REPO_ROOT"])
BUILD_DIR = Path(os.environ.get("BUILD_DIR", REPO_ROOT / "build"))
HERE = Path(__file__).resolve().parent
TEST_DB = "pg_idempotency_python"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def conninfo(db: str = TEST_DB, *, bouncer: bool = False) -> str:
    if bouncer:
        return f"host=127.0.0.1 port={os.environ['BOUNCER_PORT']} user={os.environ.get('PGUSER', 'postgres')} dbname={db}"
    return f"host={os.environ['PGHOST']} port={os.environ['PGPORT']} user={os.environ.get('PGUSER', 'postgres')} dbname={db}"


@pytest.fixture(scope="session")
def db() -> str:
    """A fresh database with the extension and demo.payments; its conninfo."""
    with psycopg.connect(conninfo("postgres"), autocommit=True) as c:
        c.execute(f"DROP DATABASE IF EXISTS {TEST_DB} WITH (FORCE)")
        c.execute(f"CREATE DATABASE {TEST_DB}")
    with psycopg.connect(conninfo(), autocommit=True) as c:
        c.execute("SET client_min_messages = warning")
        c.execute("CREATE EXTENSION pg_idempotency")
        c.execute("CREATE SCHEMA demo")
        c.execute("""CREATE TABLE demo.payments (id bigserial PRIMARY KEY, idempotency_key text NOT NULL,
                     amount bigint NOT NULL, currency text NOT NULL, created_at timestamptz NOT NULL DEFAULT now())""")
    return conninfo()


@pytest.fixture
def conn(db):
    with psycopg.connect(db) as c:
        yield c


def sql(db: str, query: str, params=()):
    with psycopg.connect(db, autocommit=True) as c:
        cur = c.execute(query, params)
        return cur.fetchall() if cur.description else []


def new_key(prefix: str = "k") -> str:
    return f"{prefix}-{uuid.uuid4()}"


class Reply:
    def __init__(self, status: int, headers: list[tuple[str, str]], body: bytes) -> None:
        self.status, self.headers, self.body = status, headers, body

    def header(self, name: str):
        for n, v in self.headers:
            if n.lower() == name.lower():
                return v
        return None

    def all(self, name: str) -> list[str]:
        return [v for n, v in self.headers if n.lower() == name.lower()]

    def __repr__(self) -> str:
        return f"Reply({self.status}, {self.headers}, {self.body!r})"


def request(port: int, method: str, path: str, body: bytes | str | None = None, headers: dict | None = None,
            timeout: float = 30) -> Reply:
    """One HTTP request on a new connection, the answer's bytes as sent."""
    if isinstance(body, str):
        body = body.encode()
    h = {"Content-Type": "application/json"} if body is not None else {}
    h.update(headers or {})
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        c.request(method, path, body=body, headers=h)
        r = c.getresponse()
        return Reply(r.status, r.getheaders(), r.read())
    finally:
        c.close()


def post_payment(port: int, key: str | None, body: str = '{"amount": 100, "currency": "EUR"}', **kw) -> Reply:
    return request(port, "POST", "/payments", body, {} if key is None else {"Idempotency-Key": key}, **kw)


class Service:
    """A server process on a loopback port, stopped at the end."""

    def __init__(self, name: str, argv: list[str], port: int, *, env: dict | None = None, cwd=None,
                 ready_path: str = "/payments/count") -> None:
        self.name, self.port = name, port
        self.log = tempfile.NamedTemporaryFile(prefix=f"py-{name}-", suffix=".log", delete=False)
        self.proc = subprocess.Popen(argv, stdout=self.log, stderr=subprocess.STDOUT, env={**os.environ, **(env or {})},
                                     cwd=cwd)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{name} exited: {self.output()}")
            try:
                if request(port, "GET", ready_path, timeout=2).status < 500:
                    return
            except OSError:
                pass
            time.sleep(0.1)
        self.stop()
        raise RuntimeError(f"{name} did not answer: {self.output()}")

    def output(self) -> str:
        return Path(self.log.name).read_text(errors="replace")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        os.unlink(self.log.name)


def python_service(db_conninfo: str, *extra: str, name: str = "python") -> Service:
    port = free_port()
    return Service(name, [sys.executable, str(REPO_ROOT / "examples/python/server.py"), "--listen",
                          f"127.0.0.1:{port}", "--db", db_conninfo, *extra], port)


def cxx_service(db_conninfo: str, *extra: str) -> Service:
    port = free_port()
    return Service("cxx", [str(BUILD_DIR / "idempotency-demo-server"), "--listen", f"127.0.0.1:{port}", "--db",
                           db_conninfo, "--threads", "8", *extra], port)


def node_service(bouncer: bool = False) -> Service:
    port = free_port()
    env = {"PGDATABASE": TEST_DB}
    if bouncer:
        env.update(PGHOST="127.0.0.1", PGPORT=os.environ["BOUNCER_PORT"])
    return Service("node", ["node", "server.js", "--listen", f"127.0.0.1:{port}", "--pool", "8"], port, env=env,
                   cwd=REPO_ROOT / "examples/node")


@pytest.fixture(scope="session")
def services(db):
    """The three demo services on one database, directly and through PgBouncer."""
    started: dict[str, Service] = {}
    try:
        started["python"] = python_service(db)
        started["cxx"] = cxx_service(db)
        started["node"] = node_service()
        started["python-pgbouncer"] = python_service(conninfo(bouncer=True), "--pooler", name="python-pgbouncer")
        started["cxx-pgbouncer"] = cxx_service(conninfo(bouncer=True), "--pooler")
        started["node-pgbouncer"] = node_service(bouncer=True)
        yield started
    finally:
        for s in started.values():
            s.stop()


@pytest.fixture(scope="session")
def redis_port():
    port = free_port()
    d = tempfile.mkdtemp(prefix="py-redis-")
    proc = subprocess.Popen(["redis-server", "--bind", "127.0.0.1", "--port", str(port), "--dir", d, "--save", "",
                             "--appendonly", "no"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    import redis

    r = redis.Redis(port=port)
    for _ in range(100):
        try:
            r.ping()
            break
        except redis.ConnectionError:
            time.sleep(0.1)
    yield port
    proc.terminate()
    proc.wait(10)
    shutil.rmtree(d, ignore_errors=True)
