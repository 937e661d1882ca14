-- Row-level security (issue 7): a policy on idempotency.keys that limits each
-- application role to its own scopes is honoured by claim, lookup, finish,
-- checkpoint, release and sweep, because the functions run with the caller's
-- rights and reach the table through plain SQL.
-- Multi-tenant set-up shown here: scopes are "<role>:<anything>", and
--   ALTER TABLE idempotency.keys ENABLE ROW LEVEL SECURITY;
--   CREATE POLICY own_scopes ON idempotency.keys TO <app roles>
--     USING (split_part(scope, ':', 1) = current_user)
--     WITH CHECK (split_part(scope, ':', 1) = current_user);
SET client_min_messages = warning;
CREATE EXTENSION IF NOT EXISTS pg_idempotency;

CREATE ROLE pgi52_a;
CREATE ROLE pgi52_b;
GRANT USAGE ON SCHEMA idempotency TO pgi52_a, pgi52_b;
GRANT EXECUTE ON ALL FUNCTIONS IN SCHEMA idempotency TO pgi52_a, pgi52_b;
GRANT SELECT, INSERT, UPDATE, DELETE ON idempotency.keys TO pgi52_a, pgi52_b;
ALTER TABLE idempotency.keys ENABLE ROW LEVEL SECURITY;
CREATE POLICY pgi52_own_scopes ON idempotency.keys TO pgi52_a, pgi52_b
  USING (split_part(scope, ':', 1) = current_user)
  WITH CHECK (split_part(scope, ':', 1) = current_user);

-- Tenant B's keys: completed, held (lease running), stale (lease over).
SET ROLE pgi52_b;
SELECT token AS b_done FROM idempotency.claim('pgi52_b:orders', 'k1') \gset
SELECT idempotency.finish('pgi52_b:orders', 'k1', :b_done, 201, '\x62'::bytea);
SELECT token AS b_held FROM idempotency.claim('pgi52_b:orders', 'held', lease => '1 hour') \gset
SELECT token AS b_stale FROM idempotency.claim('pgi52_b:orders', 'stale', lease => '1 millisecond') \gset
SELECT pg_sleep(0.01);
RESET ROLE;

CREATE FUNCTION pg_temp.b_md5() RETURNS text LANGUAGE sql AS $$
  SELECT md5(string_agg(k::text || ' ' || k.xmin::text || ' ' || k.ctid::text, E'\n' ORDER BY k.key))
  FROM idempotency.keys AS k WHERE k.scope = 'pgi52_b:orders'
$$;
SELECT pg_temp.b_md5() AS b_before \gset

CREATE FUNCTION pg_temp.try(call text) RETURNS text LANGUAGE plpgsql AS $$
DECLARE st text; msg text; res text;
BEGIN
  EXECUTE 'SELECT (' || call || ')::text' INTO res;
  RETURN 'ok: ' || coalesce(res, 'NULL');
EXCEPTION WHEN OTHERS THEN
  GET STACKED DIAGNOSTICS st = RETURNED_SQLSTATE;
  RETURN st;
END $$;
GRANT EXECUTE ON FUNCTION pg_temp.try(text) TO pgi52_a;

-- Tenant A: its own scope works end to end.
SET ROLE pgi52_a;
SELECT outcome, attempt FROM idempotency.claim('pgi52_a:orders', 'k1');
SELECT idempotency.finish('pgi52_a:orders', 'k1', (idempotency.lookup('pgi52_a:orders', 'k1')).token, 200, '\x61'::bytea);
SELECT outcome, response_status, response_body FROM idempotency.claim('pgi52_a:orders', 'k1');
SELECT (idempotency.lookup('pgi52_a:orders', 'k1')).state;
-- Tenant A and B's scope: nothing seen, nothing taken, nothing changed.
SELECT 'lookup B completed' AS what, pg_temp.try($$idempotency.lookup('pgi52_b:orders', 'k1')$$) AS result
UNION ALL SELECT 'lookup B held', pg_temp.try($$idempotency.lookup('pgi52_b:orders', 'held')$$)
UNION ALL SELECT 'claim B completed (no replay leaks)', pg_temp.try($$(idempotency.claim('pgi52_b:orders', 'k1')).outcome$$)
UNION ALL SELECT 'claim B held', pg_temp.try($$(idempotency.claim('pgi52_b:orders', 'held')).outcome$$)
UNION ALL SELECT 'claim B stale (no takeover)', pg_temp.try($$(idempotency.claim('pgi52_b:orders', 'stale')).outcome$$)
UNION ALL SELECT 'claim B new key', pg_temp.try($$(idempotency.claim('pgi52_b:orders', 'new')).outcome$$)
UNION ALL SELECT 'finish B held with its token', pg_temp.try($$idempotency.finish('pgi52_b:orders', 'held', $$ || :b_held || $$, 200)$$)
UNION ALL SELECT 'finish B stale with its token', pg_temp.try($$idempotency.finish('pgi52_b:orders', 'stale', $$ || :b_stale || $$, 200)$$)
UNION ALL SELECT 'finish B completed, same response', pg_temp.try($$idempotency.finish('pgi52_b:orders', 'k1', $$ || :b_done || $$, 201, '\x62'::bytea)$$)
UNION ALL SELECT 'checkpoint B held', pg_temp.try($$idempotency.checkpoint('pgi52_b:orders', 'held', $$ || :b_held || $$, 'x')$$)
UNION ALL SELECT 'release B held', pg_temp.try($$idempotency.release('pgi52_b:orders', 'held', $$ || :b_held || $$)$$)
UNION ALL SELECT 'read B rows directly', pg_temp.try($$(SELECT count(*) FROM idempotency.keys WHERE scope = 'pgi52_b:orders')$$)
UNION ALL SELECT 'lookup own key', pg_temp.try($$(idempotency.lookup('pgi52_a:orders', 'k1')).state$$);
RESET ROLE;
SELECT pg_temp.b_md5() = :'b_before' AS b_unchanged;

-- sweep() run by A deletes only A's expired keys. Rows are made expired
-- directly, in one transaction, so that the background sweeper cannot race.
BEGIN;
INSERT INTO idempotency.keys (scope, key, state, token, attempt, created_at, expires_at, completed_at, response_status)
VALUES ('pgi52_a:orders', 'old1', 'completed', 1, 1, now() - interval '2 days', now() - interval '1 day', now() - interval '2 days', 200),
       ('pgi52_a:orders', 'old2', 'completed', 2, 1, now() - interval '2 days', now() - interval '1 day', now() - interval '2 days', 200),
       ('pgi52_b:orders', 'old3', 'completed', 3, 1, now() - interval '2 days', now() - interval '1 day', now() - interval '2 days', 200);
SET LOCAL ROLE pgi52_a;
SELECT idempotency.sweep() AS swept_by_a;
RESET ROLE;
SELECT key FROM idempotency.keys WHERE scope LIKE 'pgi52_%' AND key LIKE 'old%' ORDER BY key;
ROLLBACK;

-- B still has its keys and can finish its own.
SET ROLE pgi52_b;
SELECT idempotency.finish('pgi52_b:orders', 'held', :b_held, 200);
SELECT key, state, response_status FROM idempotency.keys ORDER BY key;
RESET ROLE;

DROP POLICY pgi52_own_scopes ON idempotency.keys;
ALTER TABLE idempotency.keys DISABLE ROW LEVEL SECURITY;
DELETE FROM idempotency.keys WHERE scope LIKE 'pgi52_%';
DROP OWNED BY pgi52_a, pgi52_b;
DROP ROLE pgi52_a, pgi52_b;
