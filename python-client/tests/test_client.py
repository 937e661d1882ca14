"""execute(), once() and the multi-step calls on a real PostgreSQL, sync and
async, with the C++ client's transaction rules."""
from __future__ import annotations

import asyncio
import threading
import time
from datetime import timedelta

import psycopg
import pytest

import pg_idempotency as idem
from pg_idempotency import aio
from conftest import new_key, sql

BINARY = bytes(range(256)) + b"\x00end"


def insert_marker(conn, key):
    conn.execute("CREATE TABLE IF NOT EXISTS public.py_work (key text)")
    conn.execute("INSERT INTO public.py_work VALUES (%s)", (key,))


def work_count(db, key):
    sql(db, "CREATE TABLE IF NOT EXISTS public.py_work (key text)")
    return sql(db, "SELECT count(*) FROM public.py_work WHERE key = %s", (key,))[0][0]


def test_execute_claims_runs_and_replays_binary_bodies_byte_for_byte(conn, db):
    key = new_key()
    calls = []

    def handler(c):
        calls.append(1)
        insert_marker(c, key)
        return idem.Response(201, BINARY, {"Content-Type": "application/octet-stream"})

    first = idem.execute(conn, "py", key, handler, request_json='{"a": 1, "b": [1, 2]}')
    again = idem.execute(conn, "py", key, handler, request_json='{"b": [1,2],   "a": 1}')
    assert first.outcome is idem.Outcome.CLAIMED and first.attempt == 1 and first.token is not None
    assert again.outcome is idem.Outcome.REPLAY and again.replayed
    assert again.response.body == BINARY and again.response.status == 201
    assert again.response.headers == {"Content-Type": "application/octet-stream"}
    assert calls == [1] and work_count(db, key) == 1


def test_execute_with_another_request_is_a_mismatch_without_running(conn):
    key = new_key()
    idem.execute(conn, "py", key, lambda c: idem.Response(200, b"x"), fingerprint=b"\x01" * 32)
    r = idem.execute(conn, "py", key, lambda c: pytest.fail("ran"), fingerprint=b"\x02" * 32)
    assert r.outcome is idem.Outcome.MISMATCH and r.response is None


def test_execute_on_an_idle_connection_commits_its_own_transaction(conn, db):
    key = new_key()
    idem.execute(conn, "py", key, lambda c: idem.Response(200))
    assert conn.info.transaction_status == psycopg.pq.TransactionStatus.IDLE
    assert sql(db, "SELECT state::text FROM idempotency.keys WHERE key = %s", (key,)) == [("completed",)]


def test_execute_inside_a_transaction_joins_it_under_a_savepoint(conn, db):
    key, other = new_key(), new_key()
    conn.execute("SELECT 1")  # psycopg opened the caller's transaction
    insert_marker(conn, other)
    with pytest.raises(ZeroDivisionError):
        idem.execute(conn, "py", key, lambda c: (insert_marker(c, key), 1 / 0))
    assert conn.info.transaction_status == psycopg.pq.TransactionStatus.INTRANS
    assert idem.lookup(conn, "py", key) is None  # rolled back to the savepoint only
    idem.execute(conn, "py", key, lambda c: idem.Response(200))
    assert sql(db, "SELECT count(*) FROM idempotency.keys WHERE key = %s", (key,)) == [(0,)]  # not committed yet
    conn.rollback()  # the caller's rollback undoes the key and the earlier work
    assert idem.lookup(conn, "py", key) is None and work_count(db, other) == 0
    conn.rollback()


def test_execute_refuses_a_failed_transaction_with_25P02(conn):
    with pytest.raises(psycopg.errors.DivisionByZero):
        conn.execute("SELECT 1/0")
    with pytest.raises(idem.IdempotencyError) as e:
        idem.execute(conn, "py", new_key(), lambda c: idem.Response(200))
    assert e.value.sqlstate == "25P02"
    conn.rollback()


def test_a_raising_handler_rolls_back_the_key_and_its_work(conn, db):
    key = new_key()

    def handler(c):
        insert_marker(c, key)
        raise RuntimeError("boom")

    with pytest.raises(RuntimeError, match="boom"):
        idem.execute(conn, "py", key, handler)
    assert idem.lookup(conn, "py", key) is None and work_count(db, key) == 0
    conn.rollback()
    assert idem.execute(conn, "py", key, lambda c: idem.Response(200)).claimed


def test_concurrent_duplicates_run_the_handler_once(db):
    key, ran, outcomes = new_key(), [], []
    barrier = threading.Barrier(8)

    def one():
        with psycopg.connect(db) as c:
            barrier.wait()
            r = idem.execute(c, "py", key, lambda cc: (ran.append(1), cc.execute("SELECT pg_sleep(0.3)"),
                                                        idem.Response(200, b"done"))[-1])
            outcomes.append(r.outcome)

    threads = [threading.Thread(target=one) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(ran) == 1 and outcomes.count(idem.Outcome.CLAIMED) == 1
    assert set(outcomes) <= {idem.Outcome.CLAIMED, idem.Outcome.IN_PROGRESS, idem.Outcome.REPLAY}


def test_once_runs_a_new_key_and_skips_a_processed_one(conn, db):
    key = new_key("msg")
    assert idem.once(conn, "py-consumer", key, lambda c: insert_marker(c, key)) is True
    assert idem.once(conn, "py-consumer", key, lambda c: insert_marker(c, key)) is False
    assert work_count(db, key) == 1


def test_once_with_a_raising_handler_lets_the_redelivery_process_it(conn):
    key = new_key("msg")
    with pytest.raises(ValueError):
        idem.once(conn, "py-consumer", key, lambda c: (_ for _ in ()).throw(ValueError("x")))
    assert idem.once(conn, "py-consumer", key, lambda c: None) is True


def test_once_fails_with_55P03_while_another_transaction_holds_the_key(conn, db):
    key = new_key("msg")
    with psycopg.connect(db) as holder:
        holder.execute("SELECT idempotency.once('py-consumer', %s)", (key,))  # open, not committed
        with pytest.raises(idem.IdempotencyError) as e:
            idem.once(conn, "py-consumer", key, lambda c: None, wait=0.05)
        assert e.value.sqlstate == "55P03"
        holder.rollback()
    assert idem.once(conn, "py-consumer", key, lambda c: None) is True


def test_multi_step_claim_checkpoint_finish(conn):
    key = new_key("job")
    c = idem.claim(conn, "py-jobs", key, lease=timedelta(seconds=30))
    conn.commit()
    assert c.claimed and c.locked_until is not None and c.expires_at is not None
    until = idem.checkpoint(conn, "py-jobs", key, c.token, "charged")
    conn.commit()
    assert until >= c.locked_until
    rec = idem.lookup(conn, "py-jobs", key)
    assert rec.state is idem.KeyState.IN_PROGRESS and rec.recovery_point == "charged" and rec.attempt == 1
    assert idem.finish(conn, "py-jobs", key, c.token, idem.Response(200, b"ok", {"X-Step": "2"})) is True
    conn.commit()
    assert idem.finish(conn, "py-jobs", key, c.token, idem.Response(200, b"ok", {"X-Step": "2"})) is False
    conn.commit()
    r = idem.claim(conn, "py-jobs", key)
    assert r.replayed and r.response == idem.Response(200, b"ok", {"X-Step": "2"})
    conn.commit()


def test_multi_step_errors_carry_the_sqlstate(conn):
    key = new_key("job")
    c = idem.claim(conn, "py-jobs", key)
    conn.commit()
    with pytest.raises(idem.IdempotencyError) as e:
        idem.finish(conn, "py-jobs", key, c.token + 1, idem.Response(200))
    assert e.value.sqlstate == "IK001" and key in str(e.value)
    conn.rollback()
    idem.finish(conn, "py-jobs", key, c.token, idem.Response(200, b"a"))
    conn.commit()
    with pytest.raises(idem.IdempotencyError) as e:
        idem.finish(conn, "py-jobs", key, c.token, idem.Response(200, b"b"))
    assert e.value.sqlstate == "IK002"
    conn.rollback()
    with pytest.raises(idem.IdempotencyError) as e:
        idem.claim(conn, "py-jobs", "")
    assert e.value.sqlstate == "22023" and not e.value.connection_error
    conn.rollback()


def test_release_frees_the_key_for_a_fresh_claim(conn):
    key = new_key("job")
    c = idem.claim(conn, "py-jobs", key)
    conn.commit()
    assert idem.release(conn, "py-jobs", key, c.token) is True
    conn.commit()
    again = idem.claim(conn, "py-jobs", key)
    assert again.claimed and again.attempt == 1 and again.token != c.token
    conn.commit()


def test_a_key_whose_lease_ran_out_is_taken_over_with_its_recovery_point(conn):
    key = new_key("job")
    c = idem.claim(conn, "py-jobs", key, lease=timedelta(milliseconds=1))
    idem.checkpoint(conn, "py-jobs", key, c.token, "step-1", lease=timedelta(milliseconds=1))
    conn.commit()
    time.sleep(0.05)  # the lease is over (not a timing assertion)
    t = idem.claim(conn, "py-jobs", key)
    conn.commit()
    assert t.claimed and t.attempt == 2 and t.recovery_point == "step-1"
    with pytest.raises(idem.IdempotencyError) as e:
        idem.finish(conn, "py-jobs", key, c.token, idem.Response(200))
    assert e.value.sqlstate == "IK001"
    conn.rollback()


def test_fingerprint_is_canonical(conn):
    assert idem.fingerprint(conn, '{"a": 1, "b": 2}') == idem.fingerprint(conn, '{"b":2,"a":1}')
    assert len(idem.fingerprint(conn, "[1]")) == 32
    conn.rollback()


def test_a_lost_connection_is_an_08_error_never_an_outcome(conn, db):
    pid = conn.info.backend_pid
    sql(db, "SELECT pg_terminate_backend(%s)", (pid,))
    with pytest.raises(idem.IdempotencyError) as e:
        idem.claim(conn, "py", new_key())
    assert e.value.connection_error


def test_async_execute_once_and_savepoints(db):
    async def main():
        async with await psycopg.AsyncConnection.connect(db) as c:
            key = new_key("async")

            async def handler(ac):
                await ac.execute("SELECT 1")
                return idem.Response(201, BINARY)

            first = await aio.execute(c, "py-async", key, handler, request_json='{"x": 1}')
            again = await aio.execute(c, "py-async", key, handler, request_json='{ "x" : 1 }')
            assert first.claimed and again.replayed and again.response.body == BINARY
            assert await aio.once(c, "py-async", key + "-m", lambda ac: None) is True
            assert await aio.once(c, "py-async", key + "-m", lambda ac: None) is False
            await c.execute("SELECT 1")  # the caller's transaction
            with pytest.raises(KeyError):
                await aio.execute(c, "py-async", key + "-sp", lambda ac: {}["missing"])
            assert c.info.transaction_status == psycopg.pq.TransactionStatus.INTRANS
            assert await aio.lookup(c, "py-async", key + "-sp") is None
            await c.rollback()
            cl = await aio.claim(c, "py-async", key + "-ms")
            assert await aio.finish(c, "py-async", key + "-ms", cl.token, idem.Response(204)) is True
            await c.commit()
            rec = await aio.lookup(c, "py-async", key + "-ms")
            assert rec.state is idem.KeyState.COMPLETED and rec.response.status == 204

    asyncio.run(main())


def test_async_concurrent_duplicates_claim_once(db):
    key = new_key("async")
    ran = []

    async def one():
        async with await psycopg.AsyncConnection.connect(db) as c:
            async def handler(ac):
                ran.append(1)
                await ac.execute("SELECT pg_sleep(0.3)")
                return idem.Response(200)
            return (await aio.execute(c, "py-async", key, handler)).outcome

    async def main():
        return await asyncio.gather(*(one() for _ in range(6)))

    outcomes = asyncio.run(main())
    assert len(ran) == 1 and outcomes.count(idem.Outcome.CLAIMED) == 1


def test_every_statement_is_schema_qualified():
    from pg_idempotency import _statements as st

    for name in ("CLAIM", "CLAIM_JSON", "FINISH", "CHECKPOINT", "RELEASE", "LOOKUP", "SWEEP", "FINGERPRINT", "ONCE"):
        text = getattr(st, name)
        assert "idempotency." in text
        for fn in ("claim(", "finish(", "checkpoint(", "release(", "lookup(", "sweep(", "fingerprint(", "once("):
            assert text.count(fn) == text.count("idempotency." + fn), (name, fn)
