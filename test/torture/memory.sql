-- One backend making :n claim/finish pairs (plus, every 10th call, a failing
-- finish, a failing claim and a claim failing inside its internal
-- subtransaction, all caught) must keep its memory flat and hold no key lock
-- afterwards.
-- Run with psql -v n=100000. Prints before/after totals and the verdicts.
\set ON_ERROR_STOP 1
\pset footer off
SET client_min_messages = warning;
CREATE EXTENSION IF NOT EXISTS pg_idempotency;
CREATE SCHEMA IF NOT EXISTS torture_mem;
CREATE TABLE IF NOT EXISTS torture_mem.samples (calls int, bytes bigint);
-- An error inside claim's bounded wait (expired-row takeover in an internal
-- subtransaction): an application trigger refuses key 'refused', whose row is
-- expired but kept from the sweeper by a running lease.
CREATE OR REPLACE FUNCTION torture_mem.refuse() RETURNS trigger LANGUAGE plpgsql AS
  $f$BEGIN RAISE EXCEPTION 'refused' USING ERRCODE = 'P0053'; END$f$;
INSERT INTO idempotency.keys (scope, key, state, token, attempt, created_at, expires_at, locked_until)
VALUES ('mem', 'refused', 'in_progress', 1, 1, now() - interval '2 days', now() - interval '1 day', now() + interval '1 day');
CREATE TRIGGER torture_mem_refuse BEFORE INSERT OR UPDATE ON idempotency.keys
  FOR EACH ROW WHEN (NEW.key = 'refused') EXECUTE FUNCTION torture_mem.refuse();
CREATE OR REPLACE PROCEDURE torture_mem.run(n int) LANGUAGE plpgsql AS $$
DECLARE
  r idempotency.claim_result;
  k text;
  held int := 0;  -- claims that met a sweep's open batch (in_progress)
BEGIN
  FOR i IN 1..n LOOP
    k := 'k' || (i % 500);
    -- ttl of 1 microsecond: the key has expired by the next transaction, so
    -- the 500 keys are claimed again and again (the table stays small).
    r := idempotency.claim('mem', k, '\x0102'::bytea, '1 microsecond');
    -- in_progress: the background sweeper's open batch is deleting this
    -- expired row, and a claim without a wait does not wait for it (API: a
    -- key another open transaction holds); a later round claims the key.
    -- Rare by nature (0 or 1 in 103,000 calls here, at CREATE EXTENSION's
    -- sweeper turn): more than 1 % of the calls, or than the 500 keys one
    -- batch could meet, would mean claims no longer take expired keys and
    -- the loop no longer exercises finish.
    IF r.outcome = 'claimed' THEN
      IF NOT idempotency.finish('mem', k, r.token, 200, '\x6f6b'::bytea, '{"ok":true}') THEN
        RAISE EXCEPTION 'finish % returned false', k;
      END IF;
    ELSIF r.outcome = 'in_progress' THEN
      held := held + 1;
      IF held > GREATEST(n / 100, 500) THEN RAISE EXCEPTION 'call %: % claims answered in_progress', i, held; END IF;
    ELSE
      RAISE EXCEPTION 'call %: % for %', i, r.outcome, k;
    END IF;
    PERFORM idempotency.lookup('mem', k);
    IF i % 10 = 0 THEN
      BEGIN
        PERFORM idempotency.finish('mem', 'absent', 1, 200);
      EXCEPTION WHEN sqlstate 'IK001' THEN NULL;
      END;
      BEGIN
        PERFORM idempotency.claim('mem', k, NULL, '-1 s');
      EXCEPTION WHEN sqlstate '22023' THEN NULL;
      END;
      BEGIN
        PERFORM idempotency.claim('mem', 'refused');
      EXCEPTION WHEN sqlstate 'P0053' THEN NULL;
      END;
    END IF;
    IF i % 100 = 0 THEN COMMIT; END IF;
    -- Sample inside the call as well: a leak into a context that lives for
    -- the whole CALL would be freed before an outside measurement.
    IF i = n / 10 OR i = n THEN
      INSERT INTO torture_mem.samples SELECT i, sum(total_bytes) FROM pg_backend_memory_contexts;
    END IF;
  END LOOP;
  COMMIT;
END $$;
-- The in-call check allows 1 MB: a PL/pgSQL procedure that writes and
-- commits in a loop grows its own "SPI Proc" context by some tens of kB per
-- 100,000 iterations, with or without this extension (a plain INSERT loop
-- does the same).
-- Warm up: plans, caches, first-time allocations.
CALL torture_mem.run(3000);
SELECT sum(total_bytes) AS before_bytes FROM pg_backend_memory_contexts \gset
\timing on
CALL torture_mem.run(:n);
\timing off
SELECT sum(total_bytes) AS after_bytes FROM pg_backend_memory_contexts \gset
SELECT :n AS calls, :before_bytes AS before_bytes, :after_bytes AS after_bytes,
       :after_bytes - :before_bytes AS growth_bytes,
       CASE WHEN :after_bytes - :before_bytes < 1024 * 1024 THEN 'flat' ELSE 'GROWS' END AS memory;
SELECT min(bytes) FILTER (WHERE calls = :n / 10) AS in_call_at_10pct,
       min(bytes) FILTER (WHERE calls = :n) AS in_call_at_end,
       CASE WHEN min(bytes) FILTER (WHERE calls = :n) - min(bytes) FILTER (WHERE calls = :n / 10) < 1024 * 1024
            THEN 'flat' ELSE 'GROWS' END AS memory_in_call
FROM torture_mem.samples;
SELECT CASE WHEN count(*) = 0 THEN 'none' ELSE 'LEAKED ' || count(*) END AS key_locks_held
FROM pg_locks WHERE locktype = 'advisory' AND objsubid = 18865 AND pid = pg_backend_pid();
SELECT name, total_bytes FROM pg_backend_memory_contexts ORDER BY total_bytes DESC LIMIT 5;
DROP TRIGGER torture_mem_refuse ON idempotency.keys;
DELETE FROM idempotency.keys WHERE scope = 'mem';
DROP SCHEMA torture_mem CASCADE;
