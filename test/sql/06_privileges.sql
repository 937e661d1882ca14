-- Callers' rights: privileges and a hostile search_path.
CREATE EXTENSION IF NOT EXISTS pg_idempotency;
\set VERBOSITY sqlstate
CREATE ROLE idem_nobody;
CREATE ROLE idem_app;
GRANT USAGE ON SCHEMA idempotency TO idem_app;
GRANT EXECUTE ON ALL FUNCTIONS IN SCHEMA idempotency TO idem_app;
GRANT SELECT, INSERT, UPDATE, DELETE ON idempotency.keys TO idem_app;

-- a role with no grants: 42501 from every function, nothing changes
SELECT count(*) AS rows_before FROM idempotency.keys \gset
SET ROLE idem_nobody;
SELECT idempotency.claim('p', 'k');
SELECT idempotency.finish('p', 'k', 1, 200);
SELECT idempotency.checkpoint('p', 'k', 1, 'x');
SELECT idempotency.release('p', 'k', 1);
SELECT idempotency.lookup('p', 'k');
SELECT idempotency.fingerprint('{}');
SELECT idempotency.sweep();
SELECT * FROM idempotency.keys;
RESET ROLE;
-- EXECUTE alone is not enough: the table privileges are checked as for any query
GRANT USAGE ON SCHEMA idempotency TO idem_nobody;
GRANT EXECUTE ON FUNCTION idempotency.claim(text, text, bytea, interval, interval, interval, text) TO idem_nobody;
SET ROLE idem_nobody;
SELECT idempotency.claim('p', 'k');
RESET ROLE;
SELECT count(*) = :rows_before AS unchanged FROM idempotency.keys;

-- the documented grants are enough for the whole API
SET ROLE idem_app;
SELECT token AS t FROM idempotency.claim('p', 'app', idempotency.fingerprint('{"a":1}')) \gset
SELECT idempotency.checkpoint('p', 'app', :t, 'step') IS NOT NULL AS checkpointed;
SELECT idempotency.finish('p', 'app', :t, 200, 'done');
SELECT outcome FROM idempotency.claim('p', 'app', idempotency.fingerprint('{"a":1}'));
SELECT (idempotency.lookup('p', 'app')).state;
SELECT token AS t2 FROM idempotency.claim('p', 'app-2') \gset
SELECT idempotency.release('p', 'app-2', :t2);
SELECT idempotency.sweep() >= 0 AS swept;
RESET ROLE;

-- a hostile search_path: look-alike schema with a table, functions and an
-- operator that would capture unqualified names changes nothing
CREATE SCHEMA evil;
CREATE TABLE evil.keys (LIKE idempotency.keys);
CREATE FUNCTION evil.now() RETURNS timestamptz LANGUAGE sql AS $$ SELECT '2000-01-01'::timestamptz $$;
CREATE FUNCTION evil.texteq_always(text, text) RETURNS boolean LANGUAGE sql AS $$ SELECT true $$;
CREATE OPERATOR evil.= (LEFTARG = text, RIGHTARG = text, FUNCTION = evil.texteq_always);
CREATE FUNCTION evil.coalesce_lies(bytea, bytea) RETURNS bytea LANGUAGE sql AS $$ SELECT NULL::bytea $$;
SET search_path = evil, pg_catalog, pg_temp;
SELECT count(*) > 0 AS evil_eq_matches_anything FROM idempotency.keys WHERE scope = 'no such scope';
SELECT outcome FROM idempotency.claim('p', 'hostile');
SELECT outcome FROM idempotency.claim('p', 'hostile');
SELECT outcome FROM idempotency.claim('p', 'app');
SELECT token AS th FROM idempotency.lookup('p', 'hostile') \gset
SELECT idempotency.finish('p', 'hostile', :th, 200);
SELECT count(*) AS evil_rows FROM evil.keys;
SELECT pg_catalog.count(*) AS real_rows FROM idempotency.keys WHERE scope OPERATOR(pg_catalog.=) 'p';
RESET search_path;
SELECT key, state FROM idempotency.keys WHERE scope = 'p' ORDER BY key;

DROP SCHEMA evil CASCADE;
REVOKE ALL ON SCHEMA idempotency FROM idem_app, idem_nobody;
REVOKE ALL ON ALL FUNCTIONS IN SCHEMA idempotency FROM idem_app, idem_nobody;
REVOKE ALL ON idempotency.keys FROM idem_app;
DROP ROLE idem_app;
DROP ROLE idem_nobody;
