"""The Django middleware under Django's own server (runserver, threaded WSGI),
in Django's transaction, on the suite's cluster."""
from __future__ import annotations

import json
import os
import sys
import threading
import time

import pytest

from conftest import HERE, TEST_DB, Service, free_port, new_key, post_payment, request, sql

BINARY = bytes(range(256))


def start_django(name="django", **env):
    port = free_port()
    path = os.pathsep.join(filter(None, [str(HERE), os.environ.get("PYTHONPATH")]))
    return Service(name, [sys.executable, "-m", "django", "runserver", f"127.0.0.1:{port}", "--noreload"], port,
                   env={"DJANGO_SETTINGS_MODULE": "django_app.settings", "PYTHONPATH": path, "PGDATABASE": TEST_DB,
                        **env}, cwd=HERE)


@pytest.fixture(scope="module")
def django_app(db):
    sql(db, "CREATE TABLE IF NOT EXISTS public.py_django_runs (route text, key text)")
    s = start_django()
    yield s
    s.stop()


def runs(db, route, key):
    return sql(db, "SELECT count(*) FROM public.py_django_runs WHERE route = %s AND key = %s", (route, key))[0][0]


def post(app, path, key=None, body="{}"):
    return request(app.port, "POST", path, body, {} if key is None else {"Idempotency-Key": key})


def test_payment_201_replay_422_400(django_app, db):
    key = new_key("dj")
    first = post_payment(django_app.port, key, '{"amount": 3, "currency": "EUR"}')
    again = post_payment(django_app.port, key, '{"currency":"EUR","amount":3}')
    assert first.status == again.status == 201 and again.body == first.body
    assert again.header("Idempotent-Replayed") == "true"
    assert post_payment(django_app.port, key, '{"amount": 4, "currency": "EUR"}').status == 422
    assert post_payment(django_app.port, None).status == 400
    assert post_payment(django_app.port, new_key("dj"), '{"amount":').status == 400
    assert sql(db, "SELECT count(*) FROM demo.payments WHERE idempotency_key = %s", (key,))[0][0] == 1


def test_replay_is_faithful_binary_body_location_and_repeated_set_cookie(django_app, db):
    key = new_key("dj")
    first = post(django_app, "/faithful", key)
    again = post(django_app, "/faithful", key)
    assert first.status == again.status == 201 and again.body == first.body == BINARY
    assert again.header("Location") == "/things/7" and again.header("Content-Type") == "application/octet-stream"
    assert sorted(again.all("Set-Cookie")) == sorted(first.all("Set-Cookie")) and len(first.all("Set-Cookie")) == 2
    assert runs(db, "faithful", key) == 1


def test_concurrent_duplicates_one_payment_and_409_with_retry_after(django_app, db):
    key = new_key("dj")
    answers, barrier = [], threading.Barrier(4)

    def one():
        barrier.wait()
        answers.append(post_payment(django_app.port, key, '{"amount": 9, "currency": "EUR", "delay_ms": 1500}'))

    threads = [threading.Thread(target=one) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    executed = [a for a in answers if a.status == 201 and a.header("Idempotent-Replayed") is None]
    assert len(executed) == 1 and 409 in {a.status for a in answers}, answers
    assert all(a.status == 409 or a.body == executed[0].body for a in answers)
    assert all(int(a.header("Retry-After")) >= 1 for a in answers if a.status == 409)
    assert sql(db, "SELECT count(*) FROM demo.payments WHERE idempotency_key = %s", (key,))[0][0] == 1


def test_reject_stores_nothing_and_rolls_back(django_app, db):
    key = new_key("dj")
    r = post(django_app, "/reject", key)
    assert r.status == 400 and json.loads(r.body)["error"] == "invalid_request"
    assert post(django_app, "/reject", key).header("Idempotent-Replayed") is None
    assert runs(db, "reject", key) == 0


def test_a_backend_killed_mid_request_answers_503_then_a_retry_works(django_app, db):
    key = new_key("dj")
    answers = []
    t = threading.Thread(target=lambda: answers.append(post(django_app, "/slow", key, '{"sleep": 30}')))
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
    assert answers[0].status == 503, answers
    retry = post(django_app, "/slow", key, '{"sleep": 0}')
    assert retry.status == 201 and runs(db, "slow", key) == 1


def test_a_key_claimed_through_django_replays_through_the_other_services(django_app, services):
    key = new_key("dj-cross")
    first = post_payment(django_app.port, key, '{"amount": 250, "currency": "EUR"}')
    assert first.status == 201
    for name in ("python", "cxx", "node"):
        r = post_payment(services[name].port, key, '{"amount": 250, "currency": "EUR"}')
        assert r.status == 201 and r.body == first.body and r.header("Idempotent-Replayed") == "true", name
    key2 = new_key("py-to-dj")
    first = post_payment(services["python"].port, key2, '{"amount": 250, "currency": "EUR"}')
    r = post_payment(django_app.port, key2, '{"amount": 250, "currency": "EUR"}')
    assert r.status == 201 and r.body == first.body and r.header("Idempotent-Replayed") == "true"


def test_a_bounded_wait_for_a_database_slot_then_503_with_retry_after(django_app, db):
    s = start_django("django-one-slot", TEST_MAX_CONNECTIONS="1")
    try:
        holder = []
        t = threading.Thread(target=lambda: holder.append(post(s, "/slow", new_key("dj"), '{"sleep": 3}')))
        t.start()
        for _ in range(200):
            if sql(db, "SELECT count(*) FROM pg_stat_activity WHERE query LIKE 'SELECT pg_sleep%%'")[0][0]:
                break
            time.sleep(0.05)
        key = new_key("dj")
        busy = post(s, "/slow", key, '{"sleep": 0}')
        assert busy.status == 503 and json.loads(busy.body)["error"] == "database_busy"
        assert int(busy.header("Retry-After")) >= 1
        t.join()
        assert holder[0].status == 201
        assert post(s, "/slow", key, '{"sleep": 0}').status == 201  # the key was never claimed
    finally:
        s.stop()
