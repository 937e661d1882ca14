-- Moves a database from the portable edition to the pg_idempotency extension,
-- keeping every key (token, attempt, recovery point, lease, response), the
-- grants on the schema, table, view and functions, and row-level security.
-- One transaction: it either all happens or nothing does; claims from other
-- sessions wait for it (ACCESS EXCLUSIVE on the table) and then use the extension.
--
--   psql -d DB -f sql/portable/to_extension.sql
--
-- Run it as a superuser (the extension is trusted from 1.2, but carrying
-- row-level security over alters a table the bootstrap superuser then owns),
-- on a server where the extension is installed
-- (make install; shared_preload_libraries for its sweeper and stats).
-- Objects of the application that depend on the portable edition's objects
-- (e.g. a view over idempotency.keys) make it stop with an error: drop and
-- re-create them around the move.
\set ON_ERROR_STOP on
BEGIN;
SET LOCAL client_min_messages = warning;
SET LOCAL search_path = pg_catalog, pg_temp;
DO $check$
BEGIN
  IF pg_catalog.to_regproc('idempotency._portable_version') IS NULL THEN
    RAISE EXCEPTION 'the portable edition of pg_idempotency is not installed in database "%"', pg_catalog.current_database()
      USING ERRCODE = '55000', HINT = 'Nothing to move: CREATE EXTENSION pg_idempotency is all it takes.';
  END IF;
END
$check$;
LOCK TABLE idempotency.keys IN ACCESS EXCLUSIVE MODE;
\ir move/save.sql
-- The portable edition's objects, without CASCADE (an application object that
-- depends on one stops the move here).
DO $drop$
DECLARE f regprocedure;
BEGIN
  DROP VIEW idempotency.stats;
  FOR f IN SELECT p.oid FROM pg_catalog.pg_proc AS p WHERE p.pronamespace = 'idempotency'::regnamespace LOOP
    EXECUTE 'DROP FUNCTION ' || f::text;
  END LOOP;
  DROP TABLE idempotency.keys;
  DROP TYPE idempotency.claim_result;
  DROP TYPE idempotency.outcome;
  DROP TYPE idempotency.state;
END
$drop$;
COMMENT ON SCHEMA idempotency IS NULL;
CREATE EXTENSION pg_idempotency SCHEMA idempotency;
\ir move/restore.sql
COMMIT;
\set ON_ERROR_STOP off
