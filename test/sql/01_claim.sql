-- Every row of the contract's claim table, one session at a time.
-- (Concurrent rows are in the isolation specs.)
CREATE EXTENSION IF NOT EXISTS pg_idempotency;

-- absent key: claimed, attempt 1, a token, expires_at = now + ttl, locked_until = now + lease
SELECT outcome, token IS NOT NULL AS has_token, attempt, recovery_point,
       expires_at = now() + interval '24 hours' AS default_ttl,
       locked_until = now() + interval '60 seconds' AS default_lease
FROM idempotency.claim('c', 'fresh');

SELECT state, attempt, fingerprint IS NULL AS unvalidated, completed_at IS NULL AS open,
       expires_at - created_at = interval '24 hours' AS ttl_from_creation
FROM idempotency.keys WHERE scope = 'c' AND key = 'fresh';

-- explicit ttl and lease
SELECT outcome, expires_at - now() AS ttl, locked_until - now() AS lease
FROM idempotency.claim('c', 'explicit', NULL, '2 hours', '5 seconds');

-- the settings give the defaults
SET idempotency.default_ttl = '1h';
SET idempotency.default_lease = '10s';
SELECT outcome, expires_at - now() AS ttl, locked_until - now() AS lease
FROM idempotency.claim('c', 'from-settings');
RESET idempotency.default_ttl;
RESET idempotency.default_lease;

-- in_progress, committed, lease not over: in_progress with locked_until, no token
SELECT outcome, token, attempt, locked_until IS NOT NULL AS has_lease
FROM idempotency.claim('c', 'fresh');

-- completed: replay with the stored response and expires_at
SELECT token AS t1 FROM idempotency.claim('c', 'done') \gset
SELECT idempotency.finish('c', 'done', :t1, 201, '\x7b7d'::bytea, '{"content-type": "application/json"}');
SELECT outcome, token, response_status, response_body, response_headers, expires_at IS NOT NULL AS has_expiry,
       locked_until
FROM idempotency.claim('c', 'done');

-- mismatch: a different non-NULL fingerprint, over replay ...
SELECT token AS t2 FROM idempotency.claim('c', 'fp', idempotency.fingerprint('{"amount": 100}')) \gset
SELECT idempotency.finish('c', 'fp', :t2, 200, 'ok');
SELECT outcome, token, response_status, response_body, expires_at, locked_until
FROM idempotency.claim('c', 'fp', idempotency.fingerprint('{"amount": 101}'));
-- ... same request with other spelling: replay
SELECT outcome, response_status, convert_from(response_body, 'UTF8') AS body
FROM idempotency.claim('c', 'fp', idempotency.fingerprint('{ "amount" : 100.0 }'));
-- ... no fingerprint given: not validated, replay
SELECT outcome FROM idempotency.claim('c', 'fp');

-- mismatch over in_progress
SELECT outcome FROM idempotency.claim('c', 'fp-open', '\x01');
SELECT outcome FROM idempotency.claim('c', 'fp-open', '\x02');
SELECT outcome FROM idempotency.claim('c', 'fp-open', '\x01');
-- a row stored without a fingerprint accepts any
SELECT outcome FROM idempotency.claim('c', 'fresh', '\x03');

-- in_progress, committed, lease over: takeover with a new token, attempt + 1,
-- the kept recovery point; the old holder is fenced off
SELECT token AS old_token FROM idempotency.claim('c', 'crashed', NULL, NULL, '1 millisecond') \gset
SELECT idempotency.checkpoint('c', 'crashed', :old_token, 'charged-card', '1 millisecond') > now() AS renewed;
SELECT pg_sleep(0.05);
SELECT outcome, token IS NOT NULL AND token <> :old_token AS new_token, attempt, recovery_point,
       locked_until > now() AS leased
FROM idempotency.claim('c', 'crashed', NULL, NULL, '1 hour') \gset new_
\echo :new_outcome :new_new_token :new_attempt :new_recovery_point :new_leased
SELECT token AS new_token FROM idempotency.lookup('c', 'crashed') \gset
\set VERBOSITY sqlstate
SELECT idempotency.finish('c', 'crashed', :old_token, 200);
SELECT idempotency.checkpoint('c', 'crashed', :old_token, 'late');
SELECT idempotency.release('c', 'crashed', :old_token);
\set VERBOSITY default
SELECT idempotency.finish('c', 'crashed', :new_token, 200);

-- mismatch over takeover: a lease-over row with another fingerprint is not taken
SELECT outcome FROM idempotency.claim('c', 'crashed-fp', '\xaa', NULL, '1 millisecond');
SELECT pg_sleep(0.05);
SELECT outcome FROM idempotency.claim('c', 'crashed-fp', '\xbb');
SELECT outcome, attempt FROM idempotency.claim('c', 'crashed-fp', '\xaa');

-- a second takeover counts on
SELECT pg_sleep(0.05);
UPDATE idempotency.keys SET locked_until = now() - interval '1 second' WHERE scope = 'c' AND key = 'crashed-fp';
SELECT outcome, attempt FROM idempotency.claim('c', 'crashed-fp');

-- expired, not swept yet: absent again (fresh claim, attempt 1, recovery point gone)
BEGIN;  -- one now(): the 1 ms ttl must not run out between the two calls
SELECT token AS t3 FROM idempotency.claim('c', 'old', '\x01', '1 millisecond') \gset
SELECT idempotency.checkpoint('c', 'old', :t3, 'step-1') IS NOT NULL AS checkpointed;
COMMIT;
SELECT pg_sleep(0.05);
SELECT count(*) AS still_stored FROM idempotency.keys WHERE scope = 'c' AND key = 'old';
SELECT idempotency.lookup('c', 'old') IS NULL AS lookup_absent;
SELECT outcome, attempt, recovery_point, expires_at > now() + interval '23 hours' AS new_expiry
FROM idempotency.claim('c', 'old', '\x02');
-- expired completed key: claimed afresh, the old response is gone
BEGIN;
SELECT token AS t4 FROM idempotency.claim('c', 'old-done', NULL, '1 millisecond') \gset
SELECT idempotency.finish('c', 'old-done', :t4, 200, 'old');
COMMIT;
SELECT pg_sleep(0.05);
SELECT outcome, attempt, response_body FROM idempotency.claim('c', 'old-done');
SELECT state, response_status, response_body, completed_at FROM idempotency.keys WHERE scope = 'c' AND key = 'old-done';

-- scopes never collide
SELECT outcome FROM idempotency.claim('c2', 'done');
SELECT outcome FROM idempotency.claim('c', 'done');

-- keys are compared byte for byte
SELECT outcome FROM idempotency.claim('c', 'Done');
SELECT outcome FROM idempotency.claim('c', 'done ');

-- claiming a key this transaction already holds: in_progress, nothing changes
BEGIN;
SELECT outcome FROM idempotency.claim('c', 'mine');
SELECT outcome FROM idempotency.claim('c', 'mine');
COMMIT;
SELECT count(*) FROM idempotency.keys WHERE scope = 'c' AND key = 'mine';
