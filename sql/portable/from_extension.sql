-- Moves a database from the pg_idempotency extension to the portable edition,
-- keeping every key (token, attempt, recovery point, lease, response), the
-- grants on the schema, table, view and functions, and row-level security.
-- One transaction: it either all happens or nothing does; claims from other
-- sessions wait for it (ACCESS EXCLUSIVE on the table) and then use the portable edition.
--
--   psql -d DB -f sql/portable/from_extension.sql
--
-- Run it as a role that may DROP EXTENSION pg_idempotency (its owner, usually
-- a superuser); the portable edition's objects are then owned by that role
-- (ALTER ... OWNER TO another role afterwards if wanted). Objects of the
-- application that depend on the extension's objects make DROP EXTENSION stop
-- with an error: drop and re-create them around the move.
-- To move to another server (e.g. from your own to a managed one), see README,
-- "Managed Postgres": copy the keys with \copy instead.
\set ON_ERROR_STOP on
BEGIN;
SET LOCAL client_min_messages = warning;
SET LOCAL search_path = pg_catalog, pg_temp;
DO $check$
BEGIN
  IF NOT EXISTS (SELECT FROM pg_catalog.pg_extension WHERE extname = 'pg_idempotency') THEN
    RAISE EXCEPTION 'the pg_idempotency extension is not installed in database "%"', pg_catalog.current_database()
      USING ERRCODE = '55000', HINT = 'Nothing to move: psql -f sql/portable/pg_idempotency_portable.sql is all it takes.';
  END IF;
END
$check$;
LOCK TABLE idempotency.keys IN ACCESS EXCLUSIVE MODE;
\ir move/save.sql
DROP EXTENSION pg_idempotency;
\set idempotency_portable_in_transaction 1
\ir pg_idempotency_portable.sql
\unset idempotency_portable_in_transaction
\set ON_ERROR_STOP on
\ir move/restore.sql
COMMIT;
\set ON_ERROR_STOP off
