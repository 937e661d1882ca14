-- 1.2: claim's seventh argument, the W3C traceparent of the claiming request,
-- stored with the key and returned as claim_result.trace_context so that a
-- replay can link to the request that did the work.
CREATE EXTENSION IF NOT EXISTS pg_idempotency;
\set first '00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01'
\set second '00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-00'

-- a malformed traceparent: 22023 before anything is touched (nothing stored)
\set VERBOSITY sqlstate
SELECT idempotency.claim('tc', 'bad', NULL, NULL, NULL, '0', '');
SELECT idempotency.claim('tc', 'bad', NULL, NULL, NULL, '0', 'not a traceparent');
SELECT idempotency.claim('tc', 'bad', NULL, NULL, NULL, '0', upper(:'first'));              -- upper case
SELECT idempotency.claim('tc', 'bad', NULL, NULL, NULL, '0', :'first' || '-extra');          -- a later version's field
SELECT idempotency.claim('tc', 'bad', NULL, NULL, NULL, '0', 'ff' || substr(:'first', 3));   -- version ff
SELECT idempotency.claim('tc', 'bad', NULL, NULL, NULL, '0', '00-00000000000000000000000000000000-00f067aa0ba902b7-01');  -- zero trace id
SELECT idempotency.claim('tc', 'bad', NULL, NULL, NULL, '0', '00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01');  -- zero parent id
SELECT idempotency.claim('tc', 'bad', NULL, NULL, NULL, '0', '00_4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01');  -- separator
SELECT idempotency.claim('tc', 'bad', NULL, NULL, NULL, '0', '00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-0g');  -- not hex
SELECT idempotency.claim('tc', 'bad', NULL, NULL, NULL, '0', ' ' || :'first');               -- white space
-- checked before the key lock, the first look and the insert: a malformed
-- context on an existing key errors too, and the key stays as it was
SELECT token AS held FROM idempotency.claim('tc', 'held', NULL, NULL, '1 hour', '0', :'first') \gset
SELECT idempotency.claim('tc', 'held', NULL, NULL, NULL, '0', 'garbage');
\set VERBOSITY default
-- the message says what is wrong and what to pass
SELECT idempotency.claim('tc', 'bad', NULL, NULL, NULL, '0', '01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7');
SELECT count(*) AS bad_rows FROM idempotency.keys WHERE scope = 'tc' AND key = 'bad';
SELECT trace_context = :'first' AS held_unchanged, token = :held AS same_holder FROM idempotency.keys WHERE scope = 'tc' AND key = 'held';

-- any version but ff in the version-00 form, any flags
SELECT outcome, trace_context FROM idempotency.claim('tc', 'v01', NULL, NULL, NULL, '0', '01' || substr(:'first', 3));
SELECT outcome, trace_context FROM idempotency.claim('tc', 'flags', NULL, NULL, NULL, '0', substr(:'first', 1, 53) || 'ff');

-- claimed: stored, and returned as stored
SELECT outcome, trace_context = :'first' AS returned FROM idempotency.claim('tc', 'pay', idempotency.fingerprint('{"a":1}'), NULL, '1 hour', '0', :'first');
SELECT trace_context = :'first' AS stored FROM idempotency.keys WHERE scope = 'tc' AND key = 'pay';
-- in_progress: the holder's context (the request still working on it)
SELECT outcome, trace_context = :'first' AS holder FROM idempotency.claim('tc', 'pay', idempotency.fingerprint('{"a":1}'), NULL, NULL, '0', :'second');
-- mismatch: nothing stored is returned, the context neither
SELECT outcome, trace_context IS NULL AS no_context FROM idempotency.claim('tc', 'pay', idempotency.fingerprint('{"a":2}'), NULL, NULL, '0', :'second');
SELECT idempotency.finish('tc', 'pay', (SELECT token FROM idempotency.keys WHERE scope = 'tc' AND key = 'pay'), 201, 'paid');
-- replay: the context of the request that did the work (the link target),
-- whatever the replaying request passes
SELECT outcome, trace_context = :'first' AS linked FROM idempotency.claim('tc', 'pay', idempotency.fingerprint('{"a":1}'), NULL, NULL, '0', :'second');
SELECT outcome, trace_context = :'first' AS linked FROM idempotency.claim('tc', 'pay');
SELECT trace_context = :'first' AS kept FROM idempotency.keys WHERE scope = 'tc' AND key = 'pay';
-- lookup shows it too
SELECT (idempotency.lookup('tc', 'pay')).trace_context = :'first' AS looked_up;

-- a claim without a context stores NULL; callers passing six arguments or
-- named ones work as before
SELECT outcome, trace_context IS NULL AS no_context FROM idempotency.claim('tc', 'plain');
SELECT outcome FROM idempotency.claim('tc', 'named', wait => '0', trace_context => :'second');
SELECT trace_context = :'second' AS named_stored FROM idempotency.keys WHERE scope = 'tc' AND key = 'named';
SELECT outcome, trace_context IS NULL AS no_context FROM idempotency.claim('tc', 'six', NULL, NULL, NULL, '0');

-- takeover (lease over): the new claimer's context replaces the old one;
-- the replay after it links to the request that finished
SELECT token AS old FROM idempotency.claim('tc', 'crash', NULL, NULL, '1 millisecond', '0', :'first') \gset
SELECT pg_sleep(0.05);
SELECT outcome, attempt, trace_context = :'second' AS new_context FROM idempotency.claim('tc', 'crash', NULL, NULL, '1 hour', '0', :'second');
SELECT trace_context = :'second' AS replaced FROM idempotency.keys WHERE scope = 'tc' AND key = 'crash';
SELECT idempotency.finish('tc', 'crash', (SELECT token FROM idempotency.keys WHERE scope = 'tc' AND key = 'crash'), 200);
SELECT outcome, trace_context = :'second' AS linked_to_finisher FROM idempotency.claim('tc', 'crash', NULL, NULL, NULL, '0', :'first');
-- a takeover without a context clears the old one (it is not this request's)
SELECT token AS old FROM idempotency.claim('tc', 'crash2', NULL, NULL, '1 millisecond', '0', :'first') \gset
SELECT pg_sleep(0.05);
SELECT outcome, attempt, trace_context IS NULL AS cleared FROM idempotency.claim('tc', 'crash2', NULL, NULL, '1 hour');

-- an expired key claimed afresh gets the new context
SELECT outcome FROM idempotency.claim('tc', 'short', NULL, '1 millisecond', NULL, '0', :'first');
SELECT pg_sleep(0.05);
SELECT outcome, attempt, trace_context = :'second' AS fresh FROM idempotency.claim('tc', 'short', NULL, NULL, NULL, '0', :'second');

-- once() taking over a key is a new claim with no context of its own: the
-- old claimer's is cleared, whether its lease ran out or the key expired, so
-- a replay never links to a request that did not do the work
SELECT token AS old FROM idempotency.claim('tc', 'once-lease', NULL, NULL, '1 millisecond', '0', :'first') \gset
SELECT outcome FROM idempotency.claim('tc', 'once-expired', NULL, '1 millisecond', NULL, '0', :'first');
SELECT pg_sleep(0.05);
SELECT idempotency.once('tc', 'once-lease') AS lease_over, idempotency.once('tc', 'once-expired') AS expired;
SELECT key, attempt, state, trace_context IS NULL AS cleared
FROM idempotency.keys WHERE scope = 'tc' AND key IN ('once-lease', 'once-expired') ORDER BY key;
SELECT outcome, trace_context IS NULL AS no_link FROM idempotency.claim('tc', 'once-lease', NULL, NULL, NULL, '0', :'second');

-- the statement path (a trigger on the table rules out the direct write)
-- stores it the same way as the direct one
CREATE FUNCTION tc_touch() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN RETURN NEW; END $$;
CREATE TRIGGER tc_touch BEFORE INSERT OR UPDATE ON idempotency.keys FOR EACH ROW EXECUTE FUNCTION tc_touch();
SELECT outcome, trace_context = :'first' AS returned FROM idempotency.claim('tc', 'via-spi', NULL, NULL, NULL, '0', :'first');
SELECT token AS old FROM idempotency.claim('tc', 'spi-crash', NULL, NULL, '1 millisecond', '0', :'first') \gset
SELECT pg_sleep(0.05);
SELECT outcome, trace_context = :'second' AS taken_over FROM idempotency.claim('tc', 'spi-crash', NULL, NULL, NULL, '0', :'second');
DROP TRIGGER tc_touch ON idempotency.keys;
DROP FUNCTION tc_touch();
SELECT key, trace_context = :'first' AS first, trace_context = :'second' AS second
FROM idempotency.keys WHERE scope = 'tc' AND key IN ('via-spi', 'spi-crash') ORDER BY key;

-- the result type's last attribute
SELECT attname, format_type(atttypid, atttypmod) FROM pg_attribute
WHERE attrelid = 'idempotency.claim_result'::regclass AND attnum = 10;

DELETE FROM idempotency.keys WHERE scope = 'tc';
