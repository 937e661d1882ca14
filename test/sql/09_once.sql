-- once(): every outcome of the contract, one session at a time (concurrent
-- deliveries are in the isolation specs once_*.spec).
CREATE EXTENSION IF NOT EXISTS pg_idempotency;
CREATE FUNCTION pg_temp.try(sql text) RETURNS text LANGUAGE plpgsql AS $$
BEGIN
  EXECUTE sql;
  RETURN 'ok';
EXCEPTION WHEN OTHERS THEN
  RETURN SQLSTATE;
END $$;
CREATE FUNCTION pg_temp.table_digest() RETURNS text LANGUAGE sql AS
  $$ SELECT md5(coalesce(string_agg(k::text, '|' ORDER BY scope, key), '')) FROM idempotency.keys k $$;

-- absent key: true; the key is recorded completed, no response, no fingerprint, no lease
SELECT idempotency.once('o', 'new');
SELECT state, fingerprint, response_status, response_headers, response_body, locked_until,
       attempt, token IS NOT NULL AS has_token, completed_at IS NOT NULL AS completed_at_set,
       expires_at - created_at = interval '24 hours' AS default_ttl
FROM idempotency.keys WHERE scope = 'o' AND key = 'new';

-- processed key: false, nothing changes
SELECT pg_temp.table_digest() AS before \gset
SELECT idempotency.once('o', 'new');
SELECT pg_temp.table_digest() = :'before' AS unchanged;

-- keys never collide across scopes
SELECT idempotency.once('o-other', 'new');

-- a key completed by claim + finish counts as processed too
SELECT token AS t FROM idempotency.claim('o', 'finished') \gset
SELECT idempotency.finish('o', 'finished', :t, 200, 'body');
SELECT idempotency.once('o', 'finished');
SELECT response_status, response_body FROM idempotency.keys WHERE scope = 'o' AND key = 'finished';

-- ttl: explicit, NULL = idempotency.default_ttl
SELECT idempotency.once('o', 'ttl', '2 hours');
SELECT expires_at - created_at AS ttl FROM idempotency.keys WHERE scope = 'o' AND key = 'ttl';
SET idempotency.default_ttl = '1h';
SELECT idempotency.once('o', 'ttl-setting', NULL, NULL);
RESET idempotency.default_ttl;
SELECT expires_at - created_at AS ttl FROM idempotency.keys WHERE scope = 'o' AND key = 'ttl-setting';

-- the effect and the key commit or roll back together
CREATE TABLE pg_temp.effects (id text);
BEGIN;
SELECT idempotency.once('o', 'rolled-back');
INSERT INTO pg_temp.effects VALUES ('rolled-back');
ROLLBACK;
SELECT count(*) AS rows_after_rollback FROM idempotency.keys WHERE scope = 'o' AND key = 'rolled-back';
-- the redelivery processes it again
BEGIN;
SELECT idempotency.once('o', 'rolled-back');
INSERT INTO pg_temp.effects VALUES ('rolled-back');
COMMIT;
SELECT count(*) AS effects FROM pg_temp.effects;

-- a savepoint rolled back frees the key as well
BEGIN;
SAVEPOINT before_once;
SELECT idempotency.once('o', 'savepoint');
ROLLBACK TO SAVEPOINT before_once;
SELECT idempotency.once('o', 'savepoint');
COMMIT;

-- twice in one transaction: the second call sees the first
BEGIN;
SELECT idempotency.once('o', 'twice');
SELECT idempotency.once('o', 'twice');
COMMIT;

-- the consumer's pattern in PL/pgSQL: a duplicate applies nothing
CREATE FUNCTION pg_temp.consume(id text) RETURNS void LANGUAGE plpgsql AS $$
BEGIN
  IF idempotency.once('o-consumer', id) THEN
    INSERT INTO pg_temp.effects VALUES (id);
  END IF;
END $$;
SELECT pg_temp.consume('m1'), pg_temp.consume('m2');
SELECT pg_temp.consume('m1');
SELECT id, count(*) FROM pg_temp.effects WHERE id LIKE 'm%' GROUP BY id ORDER BY id;

-- expired keys count as absent (swept or not): true again, as a fresh key
SELECT idempotency.once('o', 'expired', '1 millisecond');
SELECT pg_sleep(0.05);
SELECT idempotency.once('o', 'expired');
SELECT state, attempt, expires_at - created_at = interval '24 hours' AS fresh_ttl
FROM idempotency.keys WHERE scope = 'o' AND key = 'expired';
-- an expired in_progress claim too
SELECT outcome FROM idempotency.claim('o', 'expired-claim', NULL, '1 millisecond', '1 millisecond');
SELECT pg_sleep(0.05);
SELECT idempotency.once('o', 'expired-claim');
SELECT state, attempt FROM idempotency.keys WHERE scope = 'o' AND key = 'expired-claim';

-- an in_progress claim whose lease is over is taken: true, attempt + 1, completed
SELECT outcome FROM idempotency.claim('o', 'abandoned', NULL, NULL, '1 millisecond');
SELECT pg_sleep(0.05);
SELECT idempotency.once('o', 'abandoned');
SELECT state, attempt, locked_until FROM idempotency.keys WHERE scope = 'o' AND key = 'abandoned';
SELECT outcome FROM idempotency.claim('o', 'abandoned');

-- an in_progress claim with a running lease: 55P03, never false; nothing changes
SELECT token AS held FROM idempotency.claim('o', 'leased') \gset
SELECT pg_temp.table_digest() AS before \gset
SELECT pg_temp.try($$SELECT idempotency.once('o', 'leased')$$);
SELECT pg_temp.try($$SELECT idempotency.once('o', 'leased', NULL, '100 milliseconds')$$);
SELECT pg_temp.table_digest() = :'before' AS unchanged;
-- the message names the key
DO $$
BEGIN
  PERFORM idempotency.once('o', 'leased');
EXCEPTION WHEN lock_not_available THEN
  RAISE NOTICE 'names the key: %', SQLERRM LIKE '%leased%';
END $$;
-- once the holder finishes, the key reads as processed
SELECT idempotency.finish('o', 'leased', :held, 200);
SELECT idempotency.once('o', 'leased');
-- and a released key is absent again
SELECT token AS held2 FROM idempotency.claim('o', 'released') \gset
SELECT idempotency.release('o', 'released', :held2);
SELECT idempotency.once('o', 'released');

-- errors: clear SQLSTATE, nothing stored changes
SELECT pg_temp.table_digest() AS before \gset
SELECT pg_temp.try($$SELECT idempotency.once(NULL, 'k')$$) AS null_scope;
SELECT pg_temp.try($$SELECT idempotency.once('o', NULL)$$) AS null_key;
SELECT pg_temp.try($$SELECT idempotency.once('', 'k')$$) AS empty_scope;
SELECT pg_temp.try($$SELECT idempotency.once('o', '')$$) AS empty_key;
SELECT pg_temp.try($$SELECT idempotency.once('o', repeat('k', 256))$$) AS long_key;
SELECT pg_temp.try($$SELECT idempotency.once(repeat('s', 256), 'k')$$) AS long_scope;
SELECT pg_temp.try($$SELECT idempotency.once('o', 'k', '0')$$) AS zero_ttl;
SELECT pg_temp.try($$SELECT idempotency.once('o', 'k', '-1 hour')$$) AS negative_ttl;
SELECT pg_temp.try($$SELECT idempotency.once('o', 'k', '1000000 years')$$) AS huge_ttl;
SELECT pg_temp.try($$SELECT idempotency.once('o', 'k', NULL, '-1 second')$$) AS negative_wait;
SELECT pg_temp.table_digest() = :'before' AS unchanged;
-- a 255-byte key is fine; NULL wait means no wait
SELECT idempotency.once('o', repeat('k', 255), NULL, NULL);

-- nothing is granted to PUBLIC
CREATE ROLE idem_once_nobody;
SET ROLE idem_once_nobody;
SELECT pg_temp.try($$SELECT idempotency.once('o', 'nobody')$$) AS no_privilege;
RESET ROLE;
DROP ROLE idem_once_nobody;

-- stats: true = one claim + one finish (a takeover counts as one too),
-- false = one replay, 55P03 = one in_progress
CREATE TEMP TABLE stats_before AS SELECT * FROM idempotency.stats;
SELECT idempotency.once('o-stats', 'a');
SELECT idempotency.once('o-stats', 'a');
SELECT outcome FROM idempotency.claim('o-stats', 'b');
SELECT pg_temp.try($$SELECT idempotency.once('o-stats', 'b')$$);
SELECT outcome FROM idempotency.claim('o-stats', 'c', NULL, NULL, '1 millisecond');
SELECT pg_sleep(0.05);
SELECT idempotency.once('o-stats', 'c');
SELECT s.claims - b.claims AS claims, s.finishes - b.finishes AS finishes, s.replays - b.replays AS replays,
       s.in_progress - b.in_progress AS in_progress, s.takeovers - b.takeovers AS takeovers,
       s.mismatches - b.mismatches AS mismatches, s.releases - b.releases AS releases
FROM idempotency.stats s, stats_before b;

DELETE FROM idempotency.keys WHERE scope LIKE 'o%';
