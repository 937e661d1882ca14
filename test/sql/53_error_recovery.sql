-- An error raised inside claim's bounded wait (a takeover of an expired row
-- runs its statement in an internal subtransaction with a lock_timeout) must
-- leave the caller's transaction state as any other error does: at top level
-- the failed statement ends its transaction (the next one runs normally), a
-- PL/pgSQL handler or a savepoint catches it and carries on, and no key lock,
-- row lock or transaction is left behind.
-- The error here comes from an application trigger on idempotency.keys; a
-- statement_timeout, a cancel, RLS or out-of-shared-memory do the same.
SET client_min_messages = warning;
CREATE EXTENSION IF NOT EXISTS pg_idempotency;
\set VERBOSITY terse

CREATE FUNCTION public.pgi53_refuse() RETURNS trigger LANGUAGE plpgsql AS
  $$BEGIN RAISE EXCEPTION 'pgi53: refused by an application trigger' USING ERRCODE = 'P0053'; END$$;
-- Expired, but in_progress with a running lease, so that the background
-- sweeper leaves it alone and claim takes the expired-row path.
INSERT INTO idempotency.keys (scope, key, state, token, attempt, created_at, expires_at, locked_until)
VALUES ('err53', 'refused', 'in_progress', 1, 1, now() - interval '2 days', now() - interval '1 day', now() + interval '1 day');
CREATE TRIGGER pgi53_refuse BEFORE INSERT OR UPDATE ON idempotency.keys
  FOR EACH ROW WHEN (NEW.key = 'refused') EXECUTE FUNCTION public.pgi53_refuse();

-- 1. Top level, autocommit: the error ends the statement's transaction.
SELECT outcome FROM idempotency.claim('err53', 'refused');
SELECT 'next statement runs' AS after_error, pg_current_xact_id_if_assigned() IS NULL AS no_transaction_left;
SELECT count(*) AS key_locks_left FROM pg_locks
WHERE pid = pg_backend_pid() AND locktype = 'advisory' AND objsubid = 18865;

-- 2. Caught in PL/pgSQL, which then goes on and commits its other work.
DO $$
BEGIN
  BEGIN
    PERFORM idempotency.claim('err53', 'refused');
  EXCEPTION WHEN sqlstate 'P0053' THEN
    RAISE NOTICE 'caught %', SQLSTATE;
  END;
  PERFORM idempotency.claim('err53', 'after-plpgsql');
END $$;
SELECT pg_current_xact_id_if_assigned() IS NULL AS no_transaction_left, now() = statement_timestamp() AS fresh_transaction;
SELECT count(*) AS key_locks_left FROM pg_locks
WHERE pid = pg_backend_pid() AND locktype = 'advisory' AND objsubid = 18865;

-- 3. In a transaction block, rolled back to a savepoint, then committed.
BEGIN;
SELECT outcome FROM idempotency.claim('err53', 'before-savepoint');
SAVEPOINT s;
SELECT outcome FROM idempotency.claim('err53', 'refused');
ROLLBACK TO SAVEPOINT s;
SELECT outcome FROM idempotency.claim('err53', 'after-savepoint');
COMMIT;
SELECT pg_current_xact_id_if_assigned() IS NULL AS no_transaction_left;

-- The work that was meant to commit did, the refused key is as it was.
SELECT key, state, attempt FROM idempotency.keys WHERE scope = 'err53' ORDER BY key;

DROP TRIGGER pgi53_refuse ON idempotency.keys;
DROP FUNCTION public.pgi53_refuse();
DELETE FROM idempotency.keys WHERE scope = 'err53';
