"""The consumer helper on Redis Streams: one consumer SIGKILLing itself
between a COMMIT and its XACK, then three consumers of the group at once (one
through PgBouncer, one the killed one restarted as a supervisor would)."""
from __future__ import annotations

import json
import subprocess
import sys

import psycopg
import pytest
import redis

from conftest import REPO_ROOT, conninfo, new_key, sql
import pg_idempotency as idem
from pg_idempotency.consumer import process

IDS = 300


def consumer(redis_port, name, db, *extra):
    return subprocess.Popen([sys.executable, str(REPO_ROOT / "examples/python/consumer.py"), "--redis",
                             f"127.0.0.1:{redis_port}", "--db", db, "--name", name, "--min-idle-ms", "500",
                             "--deadline-s", "90", *extra], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def test_every_payment_applied_once_despite_a_kill_between_commit_and_ack(db, redis_port):
    r = redis.Redis(port=redis_port)
    published = 0
    for i in range(IDS):
        for _ in range(2 if i % 10 == 0 else 1):  # a retrying producer publishes some twice
            r.xadd("payments", {"id": f"pay-{i}", "amount": i})
            published += 1
    r.set("payments:producer-done", 1)
    # c3 alone first: started beside the others it sometimes found the stream
    # drained before its 20th message, and exited without the kill.
    crashing = consumer(redis_port, "c3", db, "--crash-after-commit", "20")
    _, crash_log = crashing.communicate(timeout=90)
    assert crashing.returncode == -9  # killed itself after a COMMIT, before the XACK
    unacked = json.loads(crash_log.strip().splitlines()[-1])["crash_after_commit_of"]
    others = [consumer(redis_port, "c1", db),
              consumer(redis_port, "c2", conninfo(bouncer=True), "--pooler")]
    restarted = consumer(redis_port, "c3", db)
    summaries = []
    for p in [*others, restarted]:
        out, err = p.communicate(timeout=120)
        assert p.returncode == 0, err
        summaries.append(json.loads(out.strip().splitlines()[-1]))
    rows = sql(db, "SELECT count(*), count(DISTINCT business_id) FROM demo.ledger_py")[0]
    assert published == IDS + IDS // 10
    assert rows == (IDS, IDS)  # every business id applied, none twice
    assert r.xpending("payments", "ledger")["pending"] == 0
    # The entry committed but never acknowledged came back and was recognised.
    assert unacked in [e for s in summaries for e in s["recognised_entries"]]


def test_process_acks_only_after_the_commit_and_not_on_55P03(db):
    key, acked = new_key("msg"), []
    with psycopg.connect(db) as conn, psycopg.connect(db) as holder:
        holder.execute("SELECT idempotency.once('py-broker', %s)", (key,))  # another delivery, not committed
        with pytest.raises(idem.IdempotencyError) as e:
            process(conn, "py-broker", key, lambda c: None, ack=lambda: acked.append("early"), wait=0.05)
        assert e.value.sqlstate == "55P03" and acked == []
        holder.rollback()

        def ack():  # the work is committed when the broker is acknowledged
            with psycopg.connect(db) as other:
                acked.append(idem.lookup(other, "py-broker", key).state)

        assert process(conn, "py-broker", key, lambda c: None, ack=ack) is True
        assert process(conn, "py-broker", key, lambda c: pytest.fail("ran twice"), ack=ack) is False
        assert acked == [idem.KeyState.COMPLETED, idem.KeyState.COMPLETED]
