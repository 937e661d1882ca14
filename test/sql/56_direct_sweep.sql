-- sweep() and the background sweeper delete expired keys straight from the
-- table (extension/keys/direct_sweep.hpp) where that is safe, and through the
-- SQL statement otherwise. Both delete the same rows, oldest expiry first,
-- never an in_progress row whose lease runs on. The direct path writes one
-- WAL record per row (the delete); the statement two (FOR UPDATE's row lock,
-- then the delete): pg_walinspect counts the row locks to tell which ran.
-- Every case inserts its expired rows in its own transaction, so the
-- background sweeper cannot see them before sweep() does.
SET client_min_messages = warning;
CREATE EXTENSION IF NOT EXISTS pg_idempotency;
CREATE EXTENSION IF NOT EXISTS pg_walinspect;

-- Five completed keys expired 1-5 minutes ago, one in progress whose lease
-- is over, one whose lease still runs (though expired), one live key.
CREATE FUNCTION pgi56_rows() RETURNS void LANGUAGE sql AS $$
  INSERT INTO idempotency.keys (scope, key, state, token, attempt, created_at, completed_at, expires_at, locked_until)
  SELECT 'pgi56', 'done' || i, 'completed'::idempotency.state, i, 1, now() - interval '2 days', now() - interval '2 days',
         now() - i * interval '1 minute', NULL FROM generate_series(1, 5) i
  UNION ALL
  SELECT 'pgi56', 'lapsed', 'in_progress'::idempotency.state, 6, 1, now() - interval '2 days', NULL,
         now() - interval '30 seconds', now() - interval '1 hour'
  UNION ALL
  SELECT 'pgi56', 'leased', 'in_progress'::idempotency.state, 7, 1, now() - interval '2 days', NULL,
         now() - interval '10 minutes', now() + interval '1 hour'
  UNION ALL
  SELECT 'pgi56', 'live', 'completed'::idempotency.state, 8, 1, now(), now(), now() + interval '1 day', NULL
$$;
CREATE FUNCTION pgi56_left() RETURNS text LANGUAGE sql AS $$
  SELECT string_agg(key, ',' ORDER BY key) FROM idempotency.keys WHERE scope = 'pgi56'
$$;
-- Row locks written to idempotency.keys between two WAL positions.
CREATE FUNCTION pgi56_row_locks(since pg_lsn, upto pg_lsn) RETURNS bigint LANGUAGE sql AS $$
  SELECT count(*) FROM pg_get_wal_records_info(since, upto)
   WHERE resource_manager = 'Heap' AND record_type = 'LOCK'
     AND block_ref ~ ('/' || pg_relation_filenode('idempotency.keys') || '\M')
$$;

-- Direct: the oldest expiry first, then the rest; no row locks.
BEGIN;
SELECT pgi56_rows();
SELECT pg_current_wal_insert_lsn() AS since \gset
SELECT idempotency.sweep(3) AS oldest_three;
SELECT pgi56_left() AS left_after_three;
SELECT idempotency.sweep() AS rest, idempotency.sweep() AS nothing_left;
SELECT pgi56_left() AS left_at_the_end;
SELECT pg_current_wal_insert_lsn() AS upto \gset
COMMIT;
SELECT pgi56_row_locks(:'since', :'upto') AS row_locks_direct;
DELETE FROM idempotency.keys WHERE scope = 'pgi56';

-- A trigger on the table (a foreign key's, an audit log's): the statement
-- runs, so it fires once per deleted row, and the rows are the same.
CREATE TABLE pgi56_log (key text);
CREATE FUNCTION pgi56_log_delete() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  INSERT INTO public.pgi56_log VALUES (OLD.key);  -- the sweep runs with its own search_path
  RETURN OLD;
END $$;
BEGIN;
CREATE TRIGGER pgi56_audit AFTER DELETE ON idempotency.keys FOR EACH ROW EXECUTE FUNCTION pgi56_log_delete();
SELECT pgi56_rows();
SELECT pg_current_wal_insert_lsn() AS since \gset
SELECT idempotency.sweep(3) AS oldest_three, idempotency.sweep() AS rest;
SELECT pgi56_left() AS left_at_the_end;
SELECT string_agg(key, ',' ORDER BY key) AS fired_for FROM pgi56_log;
SELECT pg_current_wal_insert_lsn() AS upto \gset
DROP TRIGGER pgi56_audit ON idempotency.keys;
DELETE FROM idempotency.keys WHERE scope = 'pgi56';
COMMIT;
SELECT pgi56_row_locks(:'since', :'upto') AS row_locks_statement;

-- REPEATABLE READ (the statement's serialization checks), and a table whose
-- expiry index is gone: the statement, the same rows.
BEGIN ISOLATION LEVEL REPEATABLE READ;
SELECT pgi56_rows();
SELECT pg_current_wal_insert_lsn() AS since \gset
SELECT idempotency.sweep() AS swept_repeatable_read;
SELECT pgi56_left() AS left_repeatable_read;
SELECT pg_current_wal_insert_lsn() AS upto \gset
DELETE FROM idempotency.keys WHERE scope = 'pgi56';
COMMIT;
SELECT pgi56_row_locks(:'since', :'upto') AS row_locks_repeatable_read;
BEGIN;
DROP INDEX idempotency.keys_expires_at_idx;
SELECT pgi56_rows();
SELECT idempotency.sweep(3) AS oldest_three_no_index, idempotency.sweep() AS rest_no_index;
SELECT pgi56_left() AS left_no_index;
ROLLBACK;

-- Published for logical replication without a replica identity: deletes are
-- refused with the statement's error (55000), and nothing is deleted.
\set VERBOSITY terse
BEGIN;
SET LOCAL client_min_messages = error;  -- CREATE PUBLICATION warns when wal_level is not logical
SELECT pgi56_rows();
SAVEPOINT published;
ALTER TABLE idempotency.keys REPLICA IDENTITY NOTHING;
CREATE PUBLICATION pgi56_pub FOR TABLE idempotency.keys;
SELECT idempotency.sweep();
ROLLBACK TO published;
SELECT pgi56_left() AS left_after_refusal;
ROLLBACK;

-- A read-only transaction: refused as the statement refuses it (25006),
-- nothing deleted (table_tuple_delete does not check).
BEGIN;
SELECT pgi56_rows();
SAVEPOINT before_read_only;
SET TRANSACTION READ ONLY;
SELECT idempotency.sweep();
ROLLBACK TO before_read_only;
SELECT pgi56_left() AS left_after_read_only;
ROLLBACK;

-- Without DELETE on the table, sweep() is refused as the statement refuses it.
CREATE ROLE pgi56_reader;
GRANT USAGE ON SCHEMA idempotency TO pgi56_reader;
GRANT EXECUTE ON FUNCTION idempotency.sweep(int4) TO pgi56_reader;
GRANT SELECT ON idempotency.keys TO pgi56_reader;
SET ROLE pgi56_reader;
SELECT idempotency.sweep();
RESET ROLE;
REVOKE ALL ON idempotency.keys FROM pgi56_reader;
REVOKE ALL ON FUNCTION idempotency.sweep(int4) FROM pgi56_reader;
REVOKE ALL ON SCHEMA idempotency FROM pgi56_reader;
DROP ROLE pgi56_reader;

\set VERBOSITY default
DROP TABLE pgi56_log;
DROP FUNCTION pgi56_log_delete();
DROP FUNCTION pgi56_rows();
DROP FUNCTION pgi56_left();
DROP FUNCTION pgi56_row_locks(pg_lsn, pg_lsn);
DROP EXTENSION pg_walinspect;
