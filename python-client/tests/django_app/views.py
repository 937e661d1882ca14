import json
import time

from django.db import connection
from django.http import HttpResponse

from pg_idempotency.django import Reject

BINARY = bytes(range(256))


def _json(obj, status=200):
    return HttpResponse(json.dumps(obj, separators=(",", ":")), status=status, content_type="application/json")


def payments(request):
    """The demo's POST /payments, in the transaction that holds the key."""
    try:
        body = json.loads(request.body)
    except ValueError:
        raise Reject(400, "malformed_json", "the request body is not a JSON object")
    if not isinstance(body, dict) or not isinstance(body.get("amount"), int) or not isinstance(body.get("currency"), str):
        raise Reject(400, "invalid_request", 'expected {"amount": <int>, "currency": "<str>"}')
    if body.get("delay_ms"):
        time.sleep(body["delay_ms"] / 1000)
    with connection.cursor() as cur:
        cur.execute("INSERT INTO demo.payments (amount, currency, idempotency_key) VALUES (%s, %s, %s) RETURNING id",
                    (body["amount"], body["currency"], request.headers.get("Idempotency-Key", "")))
        (pid,) = cur.fetchone()
    return _json({"id": pid, "amount": body["amount"], "currency": body["currency"]}, 201)


def count(request):
    with connection.cursor() as cur:
        cur.execute("SELECT count(*) FROM demo.payments")
        return _json({"count": cur.fetchone()[0]})


def _record(request, route):
    with connection.cursor() as cur:
        cur.execute("INSERT INTO public.py_django_runs (route, key) VALUES (%s, %s)",
                    (route, request.headers.get("Idempotency-Key")))


def faithful(request):
    _record(request, "faithful")
    r = HttpResponse(BINARY, status=201, content_type="application/octet-stream")
    r["Location"] = "/things/7"
    r.set_cookie("session", "s1")
    r.set_cookie("theme", "dark", httponly=True)
    return r


def reject(request):
    _record(request, "reject")
    raise Reject(400, "invalid_request", "nope")


def slow(request):
    with connection.cursor() as cur:
        cur.execute("SELECT pg_sleep(%s)", (json.loads(request.body).get("sleep", 0),))
    _record(request, "slow")
    return _json({"ok": True}, 201)
