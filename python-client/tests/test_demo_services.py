"""The demo payment service's HTTP checks, the same for the Python (ASGI on
uvicorn), C++ and Node services, each directly and through PgBouncer in
transaction mode; and keys that move between the three."""
from __future__ import annotations

import threading

import pytest

from conftest import new_key, post_payment, request, sql

SERVICES = ["python", "cxx", "node", "python-pgbouncer", "cxx-pgbouncer", "node-pgbouncer"]
BODY = '{"amount": 250, "currency": "EUR"}'


def payments_with_key(db, key):
    return sql(db, "SELECT count(*) FROM demo.payments WHERE idempotency_key = %s", (key,))[0][0]


@pytest.mark.parametrize("name", SERVICES)
def test_first_request_201_then_replay_byte_for_byte(services, db, name):
    port, key = services[name].port, new_key(name)
    first = post_payment(port, key, BODY)
    assert first.status == 201, first
    assert first.header("Idempotent-Replayed") is None
    again = post_payment(port, key, '{ "currency": "EUR",  "amount": 250 }')  # canonical JSON: the same request
    assert again.status == 201 and again.body == first.body, again
    assert again.header("Idempotent-Replayed") == "true"
    assert again.header("Content-Type").lower().startswith("application/json")
    assert payments_with_key(db, key) == 1


@pytest.mark.parametrize("name", SERVICES)
def test_same_key_other_body_422(services, name):
    port, key = services[name].port, new_key(name)
    assert post_payment(port, key, BODY).status == 201
    r = post_payment(port, key, '{"amount": 251, "currency": "EUR"}')
    assert r.status == 422 and b'"idempotency_key_reused"' in r.body


@pytest.mark.parametrize("name", SERVICES)
def test_missing_or_oversized_key_and_malformed_json_400(services, name):
    port = services[name].port
    assert post_payment(port, None).status == 400
    assert post_payment(port, "x" * 256).status == 400
    r = post_payment(port, new_key(name), '{"amount": ')
    assert r.status == 400 and b'"malformed_json"' in r.body


@pytest.mark.parametrize("name", SERVICES)
def test_in_flight_duplicate_409_with_retry_after(services, db, name):
    port, key = services[name].port, new_key(name)
    body = '{"amount": 5, "currency": "EUR", "delay_ms": 2500}'
    answers = []
    t = threading.Thread(target=lambda: answers.append(post_payment(port, key, body)))
    t.start()
    threading.Event().wait(0.4)
    answers.append(post_payment(port, key, body))
    t.join()
    assert sorted(a.status for a in answers) == [201, 409], answers
    conflict = next(a for a in answers if a.status == 409)
    assert int(conflict.header("Retry-After")) >= 1
    assert payments_with_key(db, key) == 1


@pytest.mark.parametrize("name", SERVICES)
def test_concurrent_duplicates_make_one_payment(services, db, name):
    port, key = services[name].port, new_key(name)
    answers, barrier = [], threading.Barrier(6)

    def one():
        barrier.wait()
        answers.append(post_payment(port, key, '{"amount": 7, "currency": "EUR", "delay_ms": 200}'))

    threads = [threading.Thread(target=one) for _ in range(6)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    assert {a.status for a in answers} <= {201, 409} and 201 in {a.status for a in answers}
    assert len({a.body for a in answers if a.status == 201}) == 1
    assert payments_with_key(db, key) == 1


@pytest.mark.parametrize("name", SERVICES)
def test_count(services, name):
    r = request(services[name].port, "GET", "/payments/count")
    assert r.status == 200 and b'"count"' in r.body


def test_python_count_with_json_content_type_and_no_body(services):
    r = request(services["python"].port, "GET", "/payments/count", None, {"Content-Type": "application/json"})
    assert r.status == 200


@pytest.mark.parametrize("origin", ["python", "cxx", "node"])
def test_a_key_claimed_through_one_service_replays_through_the_others(services, origin):
    key = new_key("cross-" + origin)
    first = post_payment(services[origin].port, key, BODY)
    assert first.status == 201
    for other in ("python", "cxx", "node", "python-pgbouncer", "cxx-pgbouncer", "node-pgbouncer"):
        if other == origin:
            continue
        r = post_payment(services[other].port, key, '{"currency":"EUR","amount":250}')
        assert r.status == 201 and r.body == first.body, (other, r)
        assert r.header("Idempotent-Replayed") == "true", other
        assert r.header("Content-Type").lower() == first.header("Content-Type").lower(), other
        assert post_payment(services[other].port, key, '{"amount": 1, "currency": "EUR"}').status == 422, other


@pytest.mark.parametrize("name", ["python", "cxx", "node"])
def test_log_lines_are_json_with_the_request_trace_id(services, name):
    """Every line the service writes is one JSON object; a request's carries
    its trace_id: the caller's traceparent's (no OpenTelemetry SDK on this
    host, so no span of its own), else a new one per request; and the key's
    hash, never the key."""
    import hashlib
    import json
    import os
    import time

    key = new_key("log-" + name)
    trace_id = os.urandom(16).hex()
    traceparent = f"00-{trace_id}-{os.urandom(8).hex()}-01"
    assert request(services[name].port, "POST", "/payments", BODY,
                   {"Idempotency-Key": key, "traceparent": traceparent}).status == 201
    assert post_payment(services[name].port, key, BODY).status == 201
    key_hash = hashlib.sha256(key.encode()).hexdigest()
    mine = []
    for _ in range(200):
        lines = [json.loads(line) for line in services[name].output().splitlines() if line.strip()]
        mine = [x for x in lines if x.get("key_hash") == key_hash]
        if len(mine) == 2:
            break
        time.sleep(0.025)
    assert all(isinstance(x, dict) for x in lines)
    assert len(mine) == 2, lines[-5:]
    assert mine[0]["trace_id"] == trace_id
    assert len(mine[1]["trace_id"]) == 32 and mine[1]["trace_id"] not in (trace_id, "0" * 32)
    assert not any(key in json.dumps(x) for x in lines)
