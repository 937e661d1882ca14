-- Bad-input matrix (issue 7): every function with NULL in every argument,
-- empty / 255-byte / 256-byte scopes and keys (multibyte UTF-8 included),
-- fingerprints of 0, 64 and 65 bytes, zero / negative / enormous intervals,
-- responses at and above idempotency.max_response_size, unknown, stale and
-- wrong tokens, and a finish after expiry.
-- Each call must give exactly the documented SQLSTATE, an error message (or
-- its detail) that names the key, valid UTF-8 text, and leave idempotency.keys
-- byte for byte (and xmin/ctid) unchanged. Calls that succeed are undone.
SET client_min_messages = warning;
CREATE EXTENSION IF NOT EXISTS pg_idempotency;
SET idempotency.max_response_size = '1kB';

-- Checksum of every row of the table, with its physical identity.
CREATE FUNCTION pg_temp.keys_md5() RETURNS text LANGUAGE sql AS $$
  SELECT md5(coalesce(string_agg(k::text || ' ' || k.xmin::text || ' ' || k.ctid::text, E'\n'
                                 ORDER BY k.scope, k.key), ''))
  FROM idempotency.keys AS k WHERE k.scope LIKE 'bad50%'
$$;

-- Runs one call in a subtransaction; a call that succeeds is undone by a
-- private error so that the table is unchanged in every case.
CREATE FUNCTION pg_temp.try(call text, OUT state text, OUT msg text, OUT det text)
LANGUAGE plpgsql AS $$
BEGIN
  BEGIN
    EXECUTE 'SELECT ' || call;
    RAISE EXCEPTION USING ERRCODE = 'XX5OK', MESSAGE = 'undo';
  EXCEPTION WHEN OTHERS THEN
    GET STACKED DIAGNOSTICS state = RETURNED_SQLSTATE, msg = MESSAGE_TEXT, det = PG_EXCEPTION_DETAIL;
  END;
  IF state = 'XX5OK' THEN state := 'ok'; msg := ''; det := ''; END IF;
END $$;

-- Fixtures, all committed: an in_progress key, a completed key, a key taken
-- over (stale token), and an expired in_progress key.
SELECT token AS held_token FROM idempotency.claim('bad50', 'held') \gset
SELECT token AS done_token FROM idempotency.claim('bad50', 'done') \gset
SELECT idempotency.finish('bad50', 'done', :done_token, 200, '\x6f6b'::bytea, '{"a":1}');
SELECT token AS stale_token FROM idempotency.claim('bad50', 'taken', lease => '1 millisecond') \gset
SELECT pg_sleep(0.05);
SELECT outcome, attempt FROM idempotency.claim('bad50', 'taken');
SELECT token AS exp_token FROM idempotency.claim('bad50', 'expired', ttl => '10 milliseconds') \gset
SELECT pg_sleep(0.05);

CREATE TEMP TABLE m (n serial, label text, call text, expected text, names text);
INSERT INTO m (label, call, expected, names) VALUES
-- claim: NULL in every argument
('claim NULL scope',            $c$idempotency.claim(NULL, 'k-null-scope')$c$, '22004', 'k-null-scope'),
('claim NULL key',              $c$idempotency.claim('bad50', NULL)$c$, '22004', NULL),
('claim NULL fingerprint',      $c$idempotency.claim('bad50', 'k1', NULL)$c$, 'ok', NULL),
('claim NULL ttl',              $c$idempotency.claim('bad50', 'k1', NULL, NULL)$c$, 'ok', NULL),
('claim NULL lease',            $c$idempotency.claim('bad50', 'k1', NULL, NULL, NULL)$c$, 'ok', NULL),
('claim NULL wait',             $c$idempotency.claim('bad50', 'k1', NULL, NULL, NULL, NULL)$c$, 'ok', NULL),
-- claim: lengths
('claim empty scope',           $c$idempotency.claim('', 'k-empty-scope')$c$, '22023', 'k-empty-scope'),
('claim empty key',             $c$idempotency.claim('bad50', '')$c$, '22023', NULL),
('claim 255-byte key',          $c$idempotency.claim('bad50', repeat('k', 255))$c$, 'ok', NULL),
('claim 256-byte key',          $c$idempotency.claim('bad50', repeat('k', 256))$c$, '22023', 'kkkkkkkkkkkkkkkkkkkk'),
('claim 255-byte scope',        $c$idempotency.claim('bad50' || repeat('s', 250), 'k1')$c$, 'ok', NULL),
('claim 256-byte scope',        $c$idempotency.claim('bad50' || repeat('s', 251), 'k-long-scope')$c$, '22023', NULL),
('claim 255-byte 2-byte utf8',  $c$idempotency.claim('bad50', repeat('é', 127) || 'x')$c$, 'ok', NULL),
('claim 256-byte 2-byte utf8',  $c$idempotency.claim('bad50', repeat('é', 128))$c$, '22023', 'éééééééééé'),
('claim 255-byte 3-byte utf8',  $c$idempotency.claim('bad50', repeat('€', 85))$c$, 'ok', NULL),
('claim 258-byte 3-byte utf8',  $c$idempotency.claim('bad50', repeat('€', 86))$c$, '22023', '€€€€€€€€€€'),
('claim 256-byte 4-byte utf8',  $c$idempotency.claim('bad50', repeat('😀', 64))$c$, '22023', '😀😀😀😀😀'),
('claim 258-byte 3-byte scope', $c$idempotency.claim(repeat('€', 86), 'k-utf8-scope')$c$, '22023', NULL),
-- claim: fingerprints
('claim 0-byte fingerprint',    $c$idempotency.claim('bad50', 'k1', ''::bytea)$c$, 'ok', NULL),
('claim 64-byte fingerprint',   $c$idempotency.claim('bad50', 'k1', decode(repeat('ab', 64), 'hex'))$c$, 'ok', NULL),
('claim 65-byte fingerprint',   $c$idempotency.claim('bad50', 'k-fp', decode(repeat('ab', 65), 'hex'))$c$, '22023', 'k-fp'),
-- claim: intervals
('claim ttl 0',                 $c$idempotency.claim('bad50', 'k-ttl', NULL, '0')$c$, '22023', 'k-ttl'),
('claim ttl negative',          $c$idempotency.claim('bad50', 'k-ttl', NULL, '-1 second')$c$, '22023', 'k-ttl'),
('claim ttl 1 mon -40 days',    $c$idempotency.claim('bad50', 'k-ttl', NULL, '1 mon -40 days')$c$, '22023', 'k-ttl'),
('claim ttl enormous',          $c$idempotency.claim('bad50', 'k-ttl', NULL, '100000000 years')$c$, '22023', 'k-ttl'),
('claim ttl 1 microsecond',     $c$idempotency.claim('bad50', 'k1', NULL, '1 microsecond')$c$, 'ok', NULL),
('claim ttl 100 years',         $c$idempotency.claim('bad50', 'k1', NULL, '100 years')$c$, 'ok', NULL),
('claim lease 0',               $c$idempotency.claim('bad50', 'k-lease', NULL, NULL, '0')$c$, '22023', 'k-lease'),
('claim lease negative',        $c$idempotency.claim('bad50', 'k-lease', NULL, NULL, '-1 day')$c$, '22023', 'k-lease'),
('claim lease enormous',        $c$idempotency.claim('bad50', 'k-lease', NULL, NULL, '100000000 years')$c$, '22023', 'k-lease'),
('claim wait 0',                $c$idempotency.claim('bad50', 'k1', NULL, NULL, NULL, '0')$c$, 'ok', NULL),
('claim wait negative',         $c$idempotency.claim('bad50', 'k-wait', NULL, NULL, NULL, '-1 microsecond')$c$, '22023', 'k-wait'),
('claim wait -1 mon 40 days',   $c$idempotency.claim('bad50', 'k1', NULL, NULL, NULL, '-1 mon 40 days')$c$, 'ok', NULL),
('claim wait enormous',         $c$idempotency.claim('bad50', 'k1', NULL, NULL, NULL, '100000000 years')$c$, 'ok', NULL),
-- finish: NULL in every argument
('finish NULL scope',           $c$idempotency.finish(NULL, 'held', $c$ || :held_token || $c$, 200)$c$, '22004', 'held'),
('finish NULL key',             $c$idempotency.finish('bad50', NULL, $c$ || :held_token || $c$, 200)$c$, '22004', NULL),
('finish NULL token',           $c$idempotency.finish('bad50', 'held', NULL, 200)$c$, '22004', 'held'),
('finish NULL status',          $c$idempotency.finish('bad50', 'held', $c$ || :held_token || $c$, NULL)$c$, '22004', 'held'),
('finish NULL body',            $c$idempotency.finish('bad50', 'held', $c$ || :held_token || $c$, 200, NULL)$c$, 'ok', NULL),
('finish NULL headers',         $c$idempotency.finish('bad50', 'held', $c$ || :held_token || $c$, 200, NULL, NULL)$c$, 'ok', NULL),
('finish empty key',            $c$idempotency.finish('bad50', '', 1, 200)$c$, '22023', NULL),
('finish 256-byte key',         $c$idempotency.finish('bad50', repeat('k', 256), 1, 200)$c$, '22023', 'kkkkkkkkkkkkkkkkkkkk'),
-- finish: response size (max 1kB here; body plus headers)
('finish body at max',          $c$idempotency.finish('bad50', 'held', $c$ || :held_token || $c$, 200, decode(repeat('00', 1024), 'hex'))$c$, 'ok', NULL),
('finish body above max',       $c$idempotency.finish('bad50', 'held', $c$ || :held_token || $c$, 200, decode(repeat('00', 1025), 'hex'))$c$, '54000', 'held'),
('finish body+headers above',   $c$idempotency.finish('bad50', 'held', $c$ || :held_token || $c$, 200, decode(repeat('00', 1000), 'hex'), '{"x":"0123456789012345678901234567890123456789"}')$c$, '54000', 'held'),
('finish 10MB body',            $c$idempotency.finish('bad50', 'held', $c$ || :held_token || $c$, 200, decode(repeat('00', 10000000), 'hex'))$c$, '54000', 'held'),
-- finish: tokens
('finish unknown key',          $c$idempotency.finish('bad50', 'nobody', 12345, 200)$c$, 'IK001', 'nobody'),
('finish wrong token',          $c$idempotency.finish('bad50', 'held', $c$ || :held_token || $c$ + 1, 200)$c$, 'IK001', 'held'),
('finish stale token',          $c$idempotency.finish('bad50', 'taken', $c$ || :stale_token || $c$, 200)$c$, 'IK001', 'taken'),
('finish token 0',              $c$idempotency.finish('bad50', 'held', 0, 200)$c$, 'IK001', 'held'),
('finish token -1',             $c$idempotency.finish('bad50', 'held', -1, 200)$c$, 'IK001', 'held'),
('finish completed, same',      $c$idempotency.finish('bad50', 'done', $c$ || :done_token || $c$, 200, '\x6f6b'::bytea, '{"a":1}')$c$, 'ok', NULL),
('finish completed, status',    $c$idempotency.finish('bad50', 'done', $c$ || :done_token || $c$, 201, '\x6f6b'::bytea, '{"a":1}')$c$, 'IK002', 'done'),
('finish completed, body',      $c$idempotency.finish('bad50', 'done', $c$ || :done_token || $c$, 200, '\x6f6c'::bytea, '{"a":1}')$c$, 'IK002', 'done'),
('finish completed, headers',   $c$idempotency.finish('bad50', 'done', $c$ || :done_token || $c$, 200, '\x6f6b'::bytea, '{"a":2}')$c$, 'IK002', 'done'),
('finish completed, no body',   $c$idempotency.finish('bad50', 'done', $c$ || :done_token || $c$, 200, NULL, '{"a":1}')$c$, 'IK002', 'done'),
('finish completed, wrong tok', $c$idempotency.finish('bad50', 'done', $c$ || :done_token || $c$ + 1, 200, '\x6f6b'::bytea, '{"a":1}')$c$, 'IK001', 'done'),
('finish after expiry',         $c$idempotency.finish('bad50', 'expired', $c$ || :exp_token || $c$, 200)$c$, 'IK001', 'expired'),
-- checkpoint
('checkpoint NULL scope',       $c$idempotency.checkpoint(NULL, 'held', $c$ || :held_token || $c$, 'p')$c$, '22004', 'held'),
('checkpoint NULL key',         $c$idempotency.checkpoint('bad50', NULL, $c$ || :held_token || $c$, 'p')$c$, '22004', NULL),
('checkpoint NULL token',       $c$idempotency.checkpoint('bad50', 'held', NULL, 'p')$c$, '22004', 'held'),
('checkpoint NULL point',       $c$idempotency.checkpoint('bad50', 'held', $c$ || :held_token || $c$, NULL)$c$, 'ok', NULL),
('checkpoint NULL lease',       $c$idempotency.checkpoint('bad50', 'held', $c$ || :held_token || $c$, 'p', NULL)$c$, 'ok', NULL),
('checkpoint lease 0',          $c$idempotency.checkpoint('bad50', 'held', $c$ || :held_token || $c$, 'p', '0')$c$, '22023', 'held'),
('checkpoint lease negative',   $c$idempotency.checkpoint('bad50', 'held', $c$ || :held_token || $c$, 'p', '-5 minutes')$c$, '22023', 'held'),
('checkpoint lease enormous',   $c$idempotency.checkpoint('bad50', 'held', $c$ || :held_token || $c$, 'p', '100000000 years')$c$, '22023', 'held'),
('checkpoint 256-byte key',     $c$idempotency.checkpoint('bad50', repeat('k', 256), 1, 'p')$c$, '22023', 'kkkkkkkkkkkkkkkkkkkk'),
('checkpoint unknown key',      $c$idempotency.checkpoint('bad50', 'nobody', 1, 'p')$c$, 'IK001', 'nobody'),
('checkpoint wrong token',      $c$idempotency.checkpoint('bad50', 'held', $c$ || :held_token || $c$ + 1, 'p')$c$, 'IK001', 'held'),
('checkpoint stale token',      $c$idempotency.checkpoint('bad50', 'taken', $c$ || :stale_token || $c$, 'p')$c$, 'IK001', 'taken'),
('checkpoint completed key',    $c$idempotency.checkpoint('bad50', 'done', $c$ || :done_token || $c$, 'p')$c$, 'IK001', 'done'),
('checkpoint after expiry',     $c$idempotency.checkpoint('bad50', 'expired', $c$ || :exp_token || $c$, 'p')$c$, 'IK001', 'expired'),
-- release
('release NULL scope',          $c$idempotency.release(NULL, 'held', $c$ || :held_token || $c$)$c$, '22004', 'held'),
('release NULL key',            $c$idempotency.release('bad50', NULL, $c$ || :held_token || $c$)$c$, '22004', NULL),
('release NULL token',          $c$idempotency.release('bad50', 'held', NULL)$c$, '22004', 'held'),
('release held',                $c$idempotency.release('bad50', 'held', $c$ || :held_token || $c$)$c$, 'ok', NULL),
('release empty scope',         $c$idempotency.release('', 'held', 1)$c$, '22023', 'held'),
('release 256-byte key',        $c$idempotency.release('bad50', repeat('k', 256), 1)$c$, '22023', 'kkkkkkkkkkkkkkkkkkkk'),
('release unknown key',         $c$idempotency.release('bad50', 'nobody', 1)$c$, 'IK001', 'nobody'),
('release wrong token',         $c$idempotency.release('bad50', 'held', $c$ || :held_token || $c$ + 1)$c$, 'IK001', 'held'),
('release stale token',         $c$idempotency.release('bad50', 'taken', $c$ || :stale_token || $c$)$c$, 'IK001', 'taken'),
('release completed key',       $c$idempotency.release('bad50', 'done', $c$ || :done_token || $c$)$c$, 'IK001', 'done'),
('release after expiry',        $c$idempotency.release('bad50', 'expired', $c$ || :exp_token || $c$)$c$, 'IK001', 'expired'),
-- lookup, fingerprint, sweep
('lookup NULL scope',           $c$idempotency.lookup(NULL, 'held')$c$, '22004', 'held'),
('lookup NULL key',             $c$idempotency.lookup('bad50', NULL)$c$, '22004', NULL),
('lookup empty key',            $c$idempotency.lookup('bad50', '')$c$, '22023', NULL),
('lookup 256-byte key',         $c$idempotency.lookup('bad50', repeat('k', 256))$c$, '22023', 'kkkkkkkkkkkkkkkkkkkk'),
('lookup 258-byte utf8 key',    $c$idempotency.lookup('bad50', repeat('€', 86))$c$, '22023', '€€€€€€€€€€'),
('lookup unknown',              $c$idempotency.lookup('bad50', 'nobody')$c$, 'ok', NULL),
('fingerprint NULL',            $c$idempotency.fingerprint(NULL)$c$, 'ok', NULL),
('sweep NULL',                  $c$idempotency.sweep(NULL)$c$, 'ok', NULL),
('sweep 0',                     $c$idempotency.sweep(0)$c$, '22023', NULL),
('sweep negative',              $c$idempotency.sweep(-1)$c$, '22023', NULL);

-- Run the matrix inside one REPEATABLE READ transaction so that the sweeper
-- (which may delete the expired fixture at any moment) cannot change what the
-- checksum sees between two calls.
BEGIN ISOLATION LEVEL REPEATABLE READ;
CREATE TEMP TABLE r (n int, label text, expected text, names text, before text,
                     sqlstate text, message text, detail text, after text);
DO $$
DECLARE c record; t record; b text;
BEGIN
  FOR c IN SELECT * FROM m ORDER BY n LOOP
    b := pg_temp.keys_md5();
    t := pg_temp.try(c.call);
    INSERT INTO r VALUES (c.n, c.label, c.expected, c.names, b, t.state, t.msg, t.det, pg_temp.keys_md5());
  END LOOP;
END $$;
COMMIT;

-- One line per call: the SQLSTATE, whether it is the documented one, whether
-- the message or its detail names the key, and whether the table is unchanged.
SELECT label, sqlstate,
       sqlstate = expected AS documented,
       CASE WHEN names IS NULL THEN NULL
            ELSE strpos(message || ' ' || detail, names) > 0 END AS names_key,
       before = after AS unchanged
FROM r ORDER BY n;

-- Every message and detail is valid UTF-8 (an over-long multibyte key must not
-- be cut in the middle of a character).
CREATE FUNCTION pg_temp.valid_utf8(t text) RETURNS boolean LANGUAGE plpgsql AS $$
BEGIN
  PERFORM convert_from(convert_to(t, 'UTF8'), 'UTF8');
  RETURN true;
EXCEPTION WHEN character_not_in_repertoire OR untranslatable_character THEN
  RETURN false;
END $$;
SELECT label AS invalid_utf8_in_error FROM r
WHERE NOT pg_temp.valid_utf8(message) OR NOT pg_temp.valid_utf8(detail);

-- No key lock is left behind by any of those errors.
SELECT count(*) AS leaked_key_locks FROM pg_locks
WHERE locktype = 'advisory' AND objsubid = 18865 AND pid = pg_backend_pid();

-- The fixtures are as they were.
SELECT key, state, attempt, response_status, response_body, response_headers
FROM idempotency.keys WHERE scope = 'bad50' AND key <> 'expired' ORDER BY key;

DELETE FROM idempotency.keys WHERE scope LIKE 'bad50%';
