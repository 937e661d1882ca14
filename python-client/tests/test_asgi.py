"""The ASGI middleware's behaviour table, on a Starlette app under uvicorn."""
from __future__ import annotations

import json
import subprocess
import sys
import threading
import time

import pytest

from conftest import HERE, Service, free_port, new_key, request, sql

BINARY = bytes(range(256))


def start_app(db, pool=4, acquire_timeout=5.0, name="asgi"):
    port = free_port()
    return Service(name, [sys.executable, str(HERE / "asgi_app.py"), "--port", str(port), "--db", db, "--pool",
                          str(pool), "--acquire-timeout", str(acquire_timeout)], port, ready_path="/plain")


@pytest.fixture(scope="module")
def app(db):
    sql(db, "CREATE TABLE IF NOT EXISTS public.py_asgi_runs (route text, key text)")
    s = start_app(db)
    yield s
    s.stop()


def runs(db, route, key):
    return sql(db, "SELECT count(*) FROM public.py_asgi_runs WHERE route = %s AND key IS NOT DISTINCT FROM %s",
               (route, key))[0][0]


def post(app, path, key=None, body="{}", headers=None, content_type="application/json"):
    h = {"Content-Type": content_type}
    if key is not None:
        h["Idempotency-Key"] = key
    h.update(headers or {})
    return request(app.port, "POST", path, body, h)


def test_replay_is_faithful_binary_body_location_and_repeated_set_cookie(app, db):
    key = new_key()
    first = post(app, "/faithful", key)
    again = post(app, "/faithful", key)
    assert first.status == again.status == 201
    assert again.body == first.body == BINARY
    assert again.header("Idempotent-Replayed") == "true"
    assert again.header("Location") == "/things/7" and again.header("X-Custom") == "a"
    assert again.all("Set-Cookie") == first.all("Set-Cookie") and len(first.all("Set-Cookie")) == 2
    assert again.header("Content-Type") == "application/octet-stream"
    assert runs(db, "faithful", key) == 1
    stored = sql(db, "SELECT response_headers FROM idempotency.keys WHERE key = %s", (key,))[0][0]
    assert stored["set-cookie"] == first.all("Set-Cookie")  # the list form, for a header that cannot be joined


def test_by_default_set_cookie_and_other_headers_are_stored_as_in_node_and_cxx(app, db):
    key = new_key()
    first = post(app, "/default-headers", key)
    again = post(app, "/default-headers", key)
    assert first.all("Set-Cookie") and again.all("Set-Cookie") == first.all("Set-Cookie")
    assert again.header("X-Custom") == "kept" and again.body == first.body
    stored = sql(db, "SELECT response_headers FROM idempotency.keys WHERE key = %s", (key,))[0][0]
    assert set(stored) == {"content-type", "x-custom", "set-cookie"}


def test_key_required_400_and_optional_key_runs_in_a_plain_transaction(app, db):
    r = post(app, "/faithful")
    assert r.status == 400 and json.loads(r.body)["error"] == "missing_idempotency_key"
    assert r.header("Content-Type") == "application/json"
    before = runs(db, "optional", None)
    assert json.loads(post(app, "/optional").body) == {"keyed": False}
    assert json.loads(post(app, "/optional").body) == {"keyed": False}
    assert runs(db, "optional", None) == before + 2
    key = new_key()
    assert json.loads(post(app, "/optional", key).body) == {"keyed": True}
    assert post(app, "/optional", key).header("Idempotent-Replayed") == "true"
    assert runs(db, "optional", key) == 1


def test_scope_callback_keeps_tenants_apart_and_may_reject(app, db):
    key = new_key()
    a = post(app, "/tenant", key, headers={"X-Tenant": "a"})
    b = post(app, "/tenant", key, headers={"X-Tenant": "b"})
    assert a.status == b.status == 201 and a.body != b.body
    assert post(app, "/tenant", key, headers={"X-Tenant": "a"}).body == a.body
    r = post(app, "/tenant", key)
    assert r.status == 401 and json.loads(r.body)["error"] == "unauthenticated"
    assert sql(db, "SELECT array_agg(scope ORDER BY scope) FROM idempotency.keys WHERE key = %s", (key,))[0][0] == \
        ["tenant:a", "tenant:b"]


def test_the_route_runs_inside_the_transaction_that_holds_the_key(app):
    r = post(app, "/in-tx", new_key())
    assert json.loads(r.body) == {"state": "in_progress", "same_token": True}


@pytest.mark.parametrize("path,status", [("/fail500", 502), ("/reject", 400), ("/crash", 500)])
def test_failures_store_nothing_and_roll_the_work_back(app, db, path, status):
    key = new_key()
    r1 = post(app, path, key)
    r2 = post(app, path, key)
    assert r1.status == r2.status == status and r2.header("Idempotent-Replayed") is None
    assert runs(db, path.strip("/"), key) == 0
    assert sql(db, "SELECT count(*) FROM idempotency.keys WHERE key = %s", (key,))[0][0] == 0


def test_request_fingerprint_uses_raw_bytes_for_non_json_bodies(app):
    key = new_key()
    body = b"\x00\xffbinary"
    assert post(app, "/raw", key, body, content_type="application/octet-stream").status == 201
    again = post(app, "/raw", key, body, content_type="application/octet-stream")
    assert again.status == 201 and again.header("Idempotent-Replayed") == "true"
    assert post(app, "/raw", key, body + b"!", content_type="application/octet-stream").status == 422
    assert post(app, "/raw", new_key(), "{bad", content_type="application/json").status == 400


def test_json_fingerprint_is_canonical_and_includes_method_and_path(app):
    key = new_key()
    assert post(app, "/raw", key, '{"a": 1, "b": 2}').status == 201
    assert post(app, "/raw", key, '{"b":2,"a":1}').header("Idempotent-Replayed") == "true"
    other = post(app, "/in-tx", key, '{"a": 1, "b": 2}')  # another path: another scope by default
    assert other.status == 200 and other.header("Idempotent-Replayed") is None


def test_a_backend_killed_mid_request_answers_503_then_a_retry_works(app, db):
    key = new_key()
    answers = []
    t = threading.Thread(target=lambda: answers.append(post(app, "/slow", key, '{"sleep": 30}')))
    t.start()
    pid = None
    for _ in range(200):
        rows = sql(db, "SELECT pid FROM pg_stat_activity WHERE query LIKE 'SELECT pg_sleep%%' AND state = 'active'")
        if rows:
            pid = rows[0][0]
            break
        time.sleep(0.05)
    assert pid is not None
    sql(db, "SELECT pg_terminate_backend(%s)", (pid,))
    t.join()
    assert answers[0].status == 503 and json.loads(answers[0].body)["error"] == "database_unavailable"
    assert answers[0].header("Retry-After") is not None
    retry = post(app, "/slow", key, '{"sleep": 0}')
    assert retry.status == 201 and runs(db, "slow", key) == 1


def test_backpressure_a_bounded_wait_for_the_pool_then_503_with_retry_after(db):
    s = start_app(db, pool=1, acquire_timeout=0.3, name="asgi-pool1")
    try:
        holder = []
        t = threading.Thread(target=lambda: holder.append(post(s, "/slow", new_key(), '{"sleep": 3}')))
        t.start()
        for _ in range(200):
            if sql(db, "SELECT count(*) FROM pg_stat_activity WHERE query LIKE 'SELECT pg_sleep%%'")[0][0]:
                break
            time.sleep(0.05)
        key = new_key()
        busy = post(s, "/slow", key, '{"sleep": 0}')
        assert busy.status == 503 and json.loads(busy.body)["error"] == "database_busy"
        assert int(busy.header("Retry-After")) >= 1
        t.join()
        assert holder[0].status == 201
        assert post(s, "/slow", key, '{"sleep": 0}').status == 201  # the key was never claimed
    finally:
        s.stop()


def test_wait_makes_a_duplicate_wait_for_the_running_request_and_replay(app, db):
    key, answers = new_key(), []
    first = threading.Thread(target=lambda: answers.append(post(app, "/waiting", key, '{"sleep": 1.5}')))
    first.start()
    for _ in range(200):
        if sql(db, "SELECT count(*) FROM pg_stat_activity WHERE query LIKE 'SELECT pg_sleep%%'")[0][0]:
            break
        time.sleep(0.05)
    answers.append(post(app, "/waiting", key, '{"sleep": 1.5}'))
    first.join()
    assert [a.status for a in answers] == [201, 201], answers  # never a 409
    assert sorted(str(a.header("Idempotent-Replayed")) for a in answers) == ["None", "true"]
    assert answers[1].body == answers[0].body and runs(db, "slow", key) == 1


def test_routes_outside_the_policy_pass_through_untouched(app):
    assert json.loads(request(app.port, "GET", "/plain").body) == {"db": False}


def test_fingerprint_documents_match_the_node_middleware(db):
    """The same request gives the same idempotency.fingerprint() in Python and Node."""
    from pg_idempotency.http import fingerprint_document
    from conftest import REPO_ROOT

    cases = [("POST", "/payments", "application/json", b'{"b": [1, 2], "a": "\xc3\xa9"}'),
             ("PUT", "/a b/\xc3\xa9".encode().decode("utf-8"), "application/vnd.api+json; charset=utf-8", b"[1,2]"),
             ("POST", "/upload", "application/octet-stream", bytes(range(0, 256, 7)))]
    script = r"""
      let m; try { m = require('pg-idempotency'); } catch { m = require('./idempotency'); }
      const cases = JSON.parse(process.argv[1]);
      const out = cases.map(([method, path, type, hex]) => {
        const raw = Buffer.from(hex, 'hex');
        const req = { method, path: encodeURI(path), originalUrl: encodeURI(path), url: encodeURI(path), headers: { 'content-type': type } };
        return m.fingerprintDocument(req, raw, raw.toString('utf8'), 'request');
      });
      console.log(JSON.stringify(out));
    """
    arg = json.dumps([[m, p, t, b.hex()] for m, p, t, b in cases])
    node_docs = json.loads(subprocess.check_output(["node", "-e", script, arg], cwd=REPO_ROOT / "examples/node"))
    for (m, p, t, b), node_doc in zip(cases, node_docs):
        ours = fingerprint_document(m, p, t, b, "request")
        fp = sql(db, "SELECT idempotency.fingerprint(%s::jsonb) = idempotency.fingerprint(%s::jsonb)",
                 (ours, node_doc))[0][0]
        assert fp, (ours, node_doc)


def test_fastapi_route_with_the_connection_as_a_dependency(app, db):
    port = free_port()
    s = Service("fastapi", [sys.executable, str(HERE / "fastapi_app.py"), "--port", str(port), "--db", db], port,
                ready_path="/health")
    try:
        key, item = new_key(), new_key("item")
        first = post(s, "/orders", key, json.dumps({"item": item}))
        again = post(s, "/orders", key, json.dumps({"item": item}))
        assert first.status == again.status == 201 and again.body == first.body
        assert again.header("Idempotent-Replayed") == "true"
        assert post(s, "/orders", key, json.dumps({"item": item + "x"})).status == 422
        assert sql(db, "SELECT count(*) FROM public.py_asgi_runs WHERE route = 'fastapi' AND key = %s",
                   (item,))[0][0] == 1
        # FastAPI's own 400 for a bad order is an answer like any other: stored and replayed.
        bad = new_key()
        assert post(s, "/orders", bad, "{}").status == 400
        assert post(s, "/orders", bad, "{}").header("Idempotent-Replayed") == "true"
    finally:
        s.stop()
