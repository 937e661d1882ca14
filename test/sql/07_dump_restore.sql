-- pg_dump keeps the keys: idempotency.keys is a configuration table.
CREATE EXTENSION IF NOT EXISTS pg_idempotency;
SELECT extconfig = ARRAY['idempotency.keys'::regclass::oid] AS keys_is_config
FROM pg_extension WHERE extname = 'pg_idempotency';

SELECT token AS t FROM idempotency.claim('dump', 'done', idempotency.fingerprint('{"x":1}')) \gset
SELECT idempotency.finish('dump', 'done', :t, 201, '\x00ff00'::bytea, '{"h":"v"}');
SELECT outcome FROM idempotency.claim('dump', 'open');

SELECT current_database() AS regress_db \gset
\setenv REGRESS_DB :regress_db
\! pg_dump --format=custom --file=test/results/07_dump_restore.dump "$REGRESS_DB" 2>&1
\! dropdb --if-exists idempotency_restored >/dev/null 2>&1
\! createdb idempotency_restored 2>&1
\! pg_restore --exit-on-error --dbname=idempotency_restored test/results/07_dump_restore.dump 2>&1
\c idempotency_restored
SELECT key, state, response_status, response_body, response_headers, attempt
FROM idempotency.keys WHERE scope = 'dump' ORDER BY key;
SELECT outcome, response_status, response_body FROM idempotency.claim('dump', 'done', idempotency.fingerprint('{"x":1}'));
SELECT outcome FROM idempotency.claim('dump', 'done', idempotency.fingerprint('{"x":2}'));
SELECT outcome FROM idempotency.claim('dump', 'open');
\c :regress_db
\! dropdb idempotency_restored 2>&1
