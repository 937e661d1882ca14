"""The client through PgBouncer in transaction mode (pool of 4 server
connections): prepare_threshold=None, and a connection whose prepared
statements the pooler lost."""
from __future__ import annotations

import threading

import psycopg

import pg_idempotency as idem
from conftest import TEST_DB, conninfo, new_key


def test_many_clients_interleaved_through_the_pooler_with_prepare_threshold_none(db):
    errors, outcomes = [], []

    def one(n):
        try:
            with psycopg.connect(conninfo(bouncer=True), prepare_threshold=None) as c:
                for i in range(15):
                    key = new_key(f"bouncer-{n}")
                    r = idem.execute(c, "py-bouncer", key, lambda cc: idem.Response(201, b"x"))
                    outcomes.append(r.outcome)
                    outcomes.append(idem.execute(c, "py-bouncer", key, lambda cc: None).outcome)
                    assert idem.once(c, "py-bouncer-once", key, lambda cc: None) is True
        except Exception as e:  # reported below
            errors.append(e)

    threads = [threading.Thread(target=one, args=(n,)) for n in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert outcomes.count(idem.Outcome.CLAIMED) == 90 and outcomes.count(idem.Outcome.REPLAY) == 90


def test_lost_prepared_statements_switch_the_connection_to_unnamed_statements(db):
    with psycopg.connect(conninfo(bouncer=True)) as c:  # psycopg's default: prepare after 5 runs
        for _ in range(8):
            assert idem.execute(c, "py-bouncer", new_key(), lambda cc: idem.Response(200)).claimed
        assert c.prepare_threshold is not None
        # The pooler closes its server connections: the statements psycopg
        # prepared are gone from the next one.
        with psycopg.connect(conninfo("pgbouncer", bouncer=True), autocommit=True) as admin:
            admin.execute(f"RECONNECT {TEST_DB}")
        for _ in range(3):
            assert idem.execute(c, "py-bouncer", new_key(), lambda cc: idem.Response(200)).claimed
        assert c.prepare_threshold is None
