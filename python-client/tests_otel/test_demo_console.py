"""The Python demo service (examples/python/server.py) with the SDK's standard
environment, OTEL_TRACES_EXPORTER=console, against the PostgreSQL the PG*
variables name: every line it writes is one JSON object; its spans are
printed, the replay's "pg_idempotency replay" span linking to the span of the
request that did the work; each request's log line carries that request's
trace_id. Skipped without the SDK."""
from __future__ import annotations

import hashlib
import http.client
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import pytest

pytest.importorskip("opentelemetry.sdk")
import payment_scenario  # noqa: E402

REPO_ROOT = Path(__file__).resolve().parents[2]
DB = "pg_idempotency_demo_console"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def call(port: int, method: str, path: str, body: str | None = None, headers: dict | None = None) -> int:
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    c.request(method, path, body=body, headers=headers or {})
    status = c.getresponse().status
    c.close()
    return status


@pytest.fixture(scope="module")
def demo():
    payment_scenario.fresh_database(DB)
    port = free_port()
    out = tempfile.NamedTemporaryFile(prefix="py-demo-console-", suffix=".log", delete=False)
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT / "python-client/src"), "OTEL_TRACES_EXPORTER": "console",
           "OTEL_SERVICE_NAME": "payments-demo"}
    proc = subprocess.Popen([sys.executable, str(REPO_ROOT / "examples/python/server.py"), "--listen",
                             f"127.0.0.1:{port}", "--db", f"dbname={DB}", "--pool", "4"],
                            stdout=out, stderr=subprocess.STDOUT, env=env)
    try:
        for _ in range(300):
            assert proc.poll() is None, Path(out.name).read_text()
            try:
                call(port, "GET", "/payments/count")
                break
            except OSError:
                time.sleep(0.1)
        yield port, Path(out.name)
    finally:
        proc.terminate()
        proc.wait(10)
        os.unlink(out.name)


def lines_of(log: Path, match, count: int) -> list[dict]:
    for _ in range(200):
        found = [x for x in (json.loads(line) for line in log.read_text().splitlines() if line) if match(x)]
        if len(found) >= count:
            return found
        time.sleep(0.025)
    pytest.fail(f"fewer than {count} such lines in:\n{log.read_text()}")


def test_console_spans_link_and_json_log_lines_with_trace_id(demo):
    port, log = demo
    key = f"demo-{uuid.uuid4()}"
    headers = {"Content-Type": "application/json", "Idempotency-Key": key}
    assert call(port, "POST", "/payments", '{"amount": 12, "currency": "EUR"}', headers) == 201
    assert call(port, "POST", "/payments", '{"currency": "EUR", "amount": 12}', headers) == 201  # a replay
    assert call(port, "POST", "/payments", '{"amount": 13, "currency": "EUR"}', headers) == 422
    key_hash = hashlib.sha256(key.encode()).hexdigest()
    first, replay, mismatch = lines_of(log, lambda x: x.get("msg") == "request" and x.get("key_hash") == key_hash, 3)
    assert (first["replayed"], replay["replayed"], mismatch["status"]) == (False, True, 422)
    assert len({first["trace_id"], replay["trace_id"], mismatch["trace_id"]}) == 3

    def request_span(trace_id: str) -> dict:
        (s,) = [s for s in spans if s["context"]["trace_id"] == "0x" + trace_id and s["kind"] == "SpanKind.SERVER"]
        return s

    spans = lines_of(log, lambda x: "context" in x and "name" in x, 9)
    f = request_span(first["trace_id"])
    assert f["attributes"]["pg_idempotency.outcome"] == "claimed"
    assert f["resource"]["attributes"]["service.name"] == "payments-demo"
    assert request_span(replay["trace_id"])["attributes"]["pg_idempotency.outcome"] == "replay"
    assert request_span(mismatch["trace_id"])["attributes"]["pg_idempotency.outcome"] == "mismatch"
    (link,) = [s for s in spans if s["name"] == "pg_idempotency replay"
               and s["context"]["trace_id"] == "0x" + replay["trace_id"]]
    assert [(x["context"]["trace_id"], x["context"]["span_id"]) for x in link["links"]] == \
        [(f["context"]["trace_id"], f["context"]["span_id"])]
    # Every line the service wrote is one JSON object.
    assert all(isinstance(json.loads(line), dict) for line in log.read_text().splitlines() if line)
