#!/usr/bin/env python3
"""An at-least-once Redis Streams consumer that applies each payment exactly
once, with pg_idempotency.consumer.RedisStreams (idempotency.once() in the
transaction of the work, XACK after the COMMIT).

    python3 examples/python/consumer.py --redis 127.0.0.1:6379 --db "dbname=app" --name c1

Entries of stream "payments" carry fields id (the business id, the key) and
amount; each is applied as one row of demo.ledger_py. The consumer stops when
the producer has set "payments:producer-done" and nothing is left to read or
pending (or after --deadline-s). --crash-after-commit N SIGKILLs the process right after
its N-th COMMIT, before the XACK (what the tests use). Prints one JSON line.
"""
from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import time

import psycopg
import redis

from pg_idempotency.consumer import RedisStreams

STREAM, GROUP, SCOPE = "payments", "ledger", "consumer:payments"


def setup(conn: psycopg.Connection) -> None:
    with conn.transaction():
        conn.execute("SET LOCAL client_min_messages = warning")
        # Consumers start together: one creates, the others wait and find it.
        conn.execute("SELECT pg_advisory_xact_lock(hashtext('demo.ledger_py'))")
        conn.execute("CREATE EXTENSION IF NOT EXISTS pg_idempotency")
        conn.execute("CREATE SCHEMA IF NOT EXISTS demo")
        conn.execute("""CREATE TABLE IF NOT EXISTS demo.ledger_py (
            business_id text NOT NULL, amount bigint NOT NULL, consumer text NOT NULL,
            applied_at timestamptz NOT NULL DEFAULT now())""")


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--redis", default="127.0.0.1:6379")
    p.add_argument("--db", default="")
    p.add_argument("--name", default="consumer-1")
    p.add_argument("--pooler", action="store_true", help="--db is a transaction pooler: no prepared statements")
    p.add_argument("--crash-after-commit", type=int, default=0)
    p.add_argument("--min-idle-ms", type=int, default=1000)
    p.add_argument("--deadline-s", type=float, default=120.0)
    a = p.parse_args()
    host, _, port = a.redis.rpartition(":")
    r = redis.Redis(host=host, port=int(port))
    conn = psycopg.connect(a.db, prepare_threshold=None if a.pooler else 5)
    setup(conn)
    commits = [0]
    recognised: list[str] = []  # entries answered "already processed"

    def apply(db: psycopg.Connection, fields: dict) -> None:
        db.execute("INSERT INTO demo.ledger_py (business_id, amount, consumer) VALUES (%s, %s, %s)",
                   (fields["id"], int(fields["amount"]), a.name))

    def before_ack(entry: str, ran: bool) -> None:
        commits[0] += 1
        if not ran:
            recognised.append(entry)
        if a.crash_after_commit and commits[0] >= a.crash_after_commit:
            print(json.dumps({"consumer": a.name, "crash_after_commit_of": entry}), file=sys.stderr, flush=True)
            os.kill(os.getpid(), signal.SIGKILL)  # committed, never acknowledged

    c = RedisStreams(r, conn, stream=STREAM, group=GROUP, name=a.name, scope=SCOPE, handler=apply,
                     min_idle_ms=a.min_idle_ms, before_ack=before_ack)
    c.ensure_group()
    deadline = time.monotonic() + a.deadline_s  # bounded, whatever happens to the others
    while time.monotonic() < deadline:
        if c.run_once(block_ms=200):
            continue
        if r.get(f"{STREAM}:producer-done") and r.xpending(STREAM, GROUP)["pending"] == 0:
            break
    print(json.dumps({"consumer": a.name, "applied": c.applied, "redelivered": c.redelivered, "busy": c.busy,
                      "recognised_entries": recognised}))


if __name__ == "__main__":
    main()
