-- claim's first look and lookup() read the key's row with a direct
-- primary-key probe where that is safe, with idempotency.keys' OID and column
-- numbers cached per backend (extension/keys/direct_read.hpp). Every case here runs
-- in one session after the cache was filled, changes the table under it, and
-- checks that the next claim and lookup answer from the table as it is now.
SET client_min_messages = warning;
CREATE EXTENSION IF NOT EXISTS pg_idempotency;

CREATE FUNCTION pgi54_done(k text, fp bytea, body text) RETURNS boolean LANGUAGE sql AS $$
  SELECT idempotency.finish('pgi54', k, (idempotency.claim('pgi54', k, fp)).token, 201, convert_to(body, 'UTF8'))
$$;
CREATE FUNCTION pgi54_replay(k text, fp bytea DEFAULT '\x01') RETURNS text LANGUAGE sql AS $$
  SELECT c.outcome || coalesce(' ' || convert_from(c.response_body, 'UTF8'), '')
  FROM idempotency.claim('pgi54', k, fp) AS c
$$;
CREATE FUNCTION pgi54_lookup(k text) RETURNS text LANGUAGE sql AS $$
  SELECT coalesce(l.state || ' ' || convert_from(l.response_body, 'UTF8'), 'none')
  FROM idempotency.lookup('pgi54', k) AS l
$$;

SELECT pgi54_done('a', '\x01', 'first');
-- fills the cache
SELECT pgi54_replay('a'), pgi54_replay('a', '\x02') AS other_fp, pgi54_lookup('a');

-- VACUUM FULL: new relfilenodes for the table and its indexes.
VACUUM FULL idempotency.keys;
SELECT pgi54_replay('a'), pgi54_lookup('a');

-- REINDEX, and REINDEX CONCURRENTLY: the primary key gets a new OID.
SELECT 'idempotency.keys_pkey'::regclass::oid AS pkey_before \gset
REINDEX TABLE idempotency.keys;
SELECT pgi54_replay('a'), pgi54_lookup('a');
REINDEX TABLE CONCURRENTLY idempotency.keys;
SELECT 'idempotency.keys_pkey'::regclass::oid <> :pkey_before AS new_pkey_oid;
SELECT pgi54_replay('a'), pgi54_lookup('a');

-- ALTER TABLE that moves a column: fingerprint dropped and added again at a
-- new column number, then set to \x02: the first look must read the new
-- column (\x02 replays, \x03 mismatches), not the dropped one (NULL: both
-- would replay). Rolled back, the old column answers again.
BEGIN;
ALTER TABLE idempotency.keys DROP COLUMN fingerprint;
ALTER TABLE idempotency.keys ADD COLUMN fingerprint bytea;
UPDATE idempotency.keys SET fingerprint = '\x02' WHERE scope = 'pgi54' AND key = 'a';
SELECT pgi54_replay('a', '\x02') AS same_fp_after_move, pgi54_replay('a', '\x03') AS other_fp_after_move,
       pgi54_lookup('a');
ROLLBACK;
SELECT pgi54_replay('a', '\x02') AS other_fp_after_rollback;

-- A column added before the ones read: still found by name.
BEGIN;
ALTER TABLE idempotency.keys ADD COLUMN pgi54_extra int DEFAULT 7;
SELECT pgi54_replay('a'), pgi54_lookup('a');
ROLLBACK;

-- Renamed away and replaced by an empty table of the same shape: the name
-- decides, as for the SPI statements.
BEGIN;
ALTER TABLE idempotency.keys RENAME TO keys_pgi54_old;
CREATE TABLE idempotency.keys (LIKE idempotency.keys_pgi54_old INCLUDING ALL);
SELECT pgi54_lookup('a') AS lookup_in_new_table, pgi54_replay('a') AS claim_in_new_table;
ROLLBACK;
SELECT pgi54_replay('a'), pgi54_lookup('a');

-- Inheritance: a row in a child table is part of what "FROM idempotency.keys"
-- reads, so the direct probe (which reads the parent only) must step aside.
BEGIN;
CREATE TABLE pgi54_child () INHERITS (idempotency.keys);
INSERT INTO pgi54_child (scope, key, fingerprint, state, token, attempt, created_at, completed_at, expires_at,
                         response_status, response_body)
VALUES ('pgi54', 'in-child', '\x01', 'completed', 1, 1, now(), now(), now() + interval '1 day', 200,
        convert_to('from the child', 'UTF8'));
SELECT pgi54_replay('in-child'), pgi54_lookup('in-child');
ROLLBACK;

-- Privileges are checked on every call, not cached: a role that loses SELECT
-- gets 42501 from the first look again.
CREATE ROLE pgi54_app;
GRANT USAGE ON SCHEMA idempotency TO pgi54_app;
GRANT EXECUTE ON ALL FUNCTIONS IN SCHEMA idempotency TO pgi54_app;
GRANT SELECT, INSERT, UPDATE, DELETE ON idempotency.keys TO pgi54_app;
SET ROLE pgi54_app;
SELECT pgi54_replay('a'), pgi54_lookup('a');
RESET ROLE;
REVOKE SELECT ON idempotency.keys FROM pgi54_app;
SET ROLE pgi54_app;
\set VERBOSITY sqlstate
SELECT pgi54_replay('a');
SELECT pgi54_lookup('a');
\set VERBOSITY default
RESET ROLE;
-- Column privileges on every column the first look reads suffice, as for SQL.
GRANT SELECT (scope, key, fingerprint, state, token, attempt, recovery_point, expires_at, locked_until,
              response_status, response_headers, response_body, trace_context) ON idempotency.keys TO pgi54_app;
SET ROLE pgi54_app;
SELECT pgi54_replay('a');
RESET ROLE;
REVOKE ALL ON idempotency.keys FROM pgi54_app;
REVOKE ALL ON ALL FUNCTIONS IN SCHEMA idempotency FROM pgi54_app;
REVOKE ALL ON SCHEMA idempotency FROM pgi54_app;
DROP ROLE pgi54_app;

-- DROP and CREATE EXTENSION: a new table with a new OID; the keys are gone.
DROP EXTENSION pg_idempotency;
CREATE EXTENSION pg_idempotency;
SELECT pgi54_lookup('a') AS lookup_after_recreate, pgi54_replay('a') AS claim_after_recreate;
SELECT pgi54_done('b', '\x01', 'second');
SELECT pgi54_replay('b'), pgi54_lookup('b');

DELETE FROM idempotency.keys WHERE scope = 'pgi54';
DROP FUNCTION pgi54_done(text, bytea, text), pgi54_replay(text, bytea), pgi54_lookup(text);
