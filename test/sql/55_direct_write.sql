-- A new key's INSERT and finish()'s UPDATE go straight to the table and its
-- indexes where that is safe (extension/keys/direct_write.hpp), and through the SPI
-- statement otherwise. Both must leave the same rows and index entries, and
-- the statement must take over wherever triggers, constraints, defaults or
-- isolation need it. amcheck's heapallindexed check proves every index
-- (partial and expression ones too) holds exactly the rows it should.
SET client_min_messages = warning;
CREATE EXTENSION IF NOT EXISTS pg_idempotency;
CREATE EXTENSION IF NOT EXISTS amcheck;

CREATE FUNCTION pgi55_done(k text, status int DEFAULT 201) RETURNS boolean LANGUAGE sql AS $$
  SELECT idempotency.finish('pgi55', k, (idempotency.claim('pgi55', k, '\x01')).token, status,
                            convert_to('body ' || k, 'UTF8'), '{"content-type": "text/plain"}')
$$;
CREATE FUNCTION pgi55_indexes_ok() RETURNS text LANGUAGE plpgsql AS $$
DECLARE i regclass; n int := 0;
BEGIN
  FOR i IN SELECT indexrelid::regclass FROM pg_index WHERE indrelid = 'idempotency.keys'::regclass LOOP
    PERFORM bt_index_check(i, heapallindexed => true);
    n := n + 1;
  END LOOP;
  RETURN n || ' indexes checked';
END $$;

-- Indexes a user may add (the stuck-work partial index from the README, an
-- expression index): maintained by the direct writes too.
CREATE INDEX pgi55_stuck ON idempotency.keys (locked_until) WHERE state = 'in_progress';
CREATE INDEX pgi55_lower ON idempotency.keys (lower(key));

-- Claimed and finished in one statement: the finish sees the row the claim
-- inserted (the command counter moved on).
SELECT count(*) FILTER (WHERE pgi55_done('k' || i)) AS finished FROM generate_series(1, 200) i;
-- Left in progress: in the partial index until finished.
SELECT outcome FROM idempotency.claim('pgi55', 'open', '\x01');
SET enable_seqscan = off;
SELECT key FROM idempotency.keys WHERE state = 'in_progress' AND locked_until > now() - interval '1 hour'
 AND scope = 'pgi55';
SELECT count(*) AS by_expression FROM idempotency.keys WHERE lower(key) = 'k7';
RESET enable_seqscan;
SELECT pgi55_indexes_ok();
SELECT state, attempt, response_status, convert_from(response_body, 'UTF8') AS body, response_headers,
       completed_at IS NOT NULL AS has_completed_at, locked_until IS NULL AS lease_cleared,
       expires_at > now() + interval '23 hours' AS expires_tomorrow
  FROM idempotency.keys WHERE scope = 'pgi55' AND key = 'k42';

-- Twice in one statement: the second claim's first look (the statement's
-- snapshot) cannot see the first one's row, and this transaction already
-- holds the key lock: it must look again, not insert (no 23505).
SELECT a.outcome AS first, b.outcome AS second
  FROM idempotency.claim('pgi55', 'twice', '\x01') AS a, idempotency.claim('pgi55', 'twice', '\x01') AS b;

-- once() records a new key completed in the same single write.
SELECT idempotency.once('pgi55', 'once_a') AS first_time, idempotency.once('pgi55', 'once_a') AS again;
SELECT state, attempt, fingerprint IS NULL AS no_fingerprint, locked_until IS NULL AS no_lease,
       completed_at = created_at AS completed_at_once, response_status IS NULL AS no_response
  FROM idempotency.keys WHERE scope = 'pgi55' AND key = 'once_a';
SELECT count(*) FILTER (WHERE idempotency.once('pgi55', 'once_' || i)) AS recorded FROM generate_series(1, 50) i;

-- Triggers: the statement runs, so they fire.
CREATE TABLE pgi55_log (op text, key text, state text);
CREATE FUNCTION pgi55_log_row() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  INSERT INTO public.pgi55_log VALUES (TG_OP, NEW.key, NEW.state::text);
  RETURN NEW;
END $$;
CREATE TRIGGER pgi55_log BEFORE INSERT OR UPDATE ON idempotency.keys FOR EACH ROW EXECUTE FUNCTION pgi55_log_row();
SELECT pgi55_done('triggered');
SELECT * FROM pgi55_log ORDER BY op;
DROP TRIGGER pgi55_log ON idempotency.keys;
SELECT pgi55_done('untriggered');
SELECT count(*) AS logged_after_drop FROM pgi55_log WHERE key = 'untriggered';

-- CHECK constraints hold on both writes, and a refused write changes nothing.
ALTER TABLE idempotency.keys ADD CONSTRAINT pgi55_no_bad_key CHECK (key <> 'bad') NOT VALID;
ALTER TABLE idempotency.keys ADD CONSTRAINT pgi55_no_299 CHECK (response_status <> 299) NOT VALID;
\set VERBOSITY terse
SELECT outcome FROM idempotency.claim('pgi55', 'bad', '\x01');
SELECT pgi55_done('refused', 299);
\set VERBOSITY default
SELECT count(*) AS rows_after_refusals FROM idempotency.keys WHERE scope = 'pgi55' AND key IN ('bad', 'refused');
ALTER TABLE idempotency.keys DROP CONSTRAINT pgi55_no_bad_key, DROP CONSTRAINT pgi55_no_299;

-- A column the extension does not know, with a default: the statement fills it.
ALTER TABLE idempotency.keys ADD COLUMN pgi55_note text DEFAULT 'noted';
SELECT pgi55_done('with_note');
SELECT pgi55_note FROM idempotency.keys WHERE scope = 'pgi55' AND key = 'with_note';
ALTER TABLE idempotency.keys DROP COLUMN pgi55_note;
SELECT pgi55_done('after_note');

-- REPEATABLE READ: finish() runs the statement (which re-checks a row
-- updated meanwhile under the transaction's snapshot).
BEGIN ISOLATION LEVEL REPEATABLE READ;
SELECT pgi55_done('repeatable');
COMMIT;
SELECT state FROM idempotency.keys WHERE scope = 'pgi55' AND key = 'repeatable';

-- A finish with a wrong token stores nothing, with the usual error.
SELECT token AS open_token FROM idempotency.lookup('pgi55', 'open') \gset
\set VERBOSITY terse
SELECT idempotency.finish('pgi55', 'open', :open_token + 1, 200);
\set VERBOSITY default
SELECT idempotency.finish('pgi55', 'open', :open_token, 200);
SELECT state, response_status FROM idempotency.keys WHERE scope = 'pgi55' AND key = 'open';

-- A read-only transaction: the writes are refused as the statements refuse
-- them (25006), nothing stored; table_tuple_insert and table_tuple_update do
-- not check, so the direct path must not be taken there.
SELECT outcome FROM idempotency.claim('pgi55', 'ro_open') \gset
SELECT token AS ro_token FROM idempotency.lookup('pgi55', 'ro_open') \gset
\set VERBOSITY terse
BEGIN READ ONLY;
SELECT outcome FROM idempotency.claim('pgi55', 'ro_new');
ROLLBACK;
BEGIN READ ONLY;
SELECT idempotency.once('pgi55', 'ro_once');
ROLLBACK;
BEGIN READ ONLY;
SELECT idempotency.finish('pgi55', 'ro_open', :ro_token, 200);
ROLLBACK;
SET default_transaction_read_only = on;
SELECT outcome FROM idempotency.claim('pgi55', 'ro_new');
RESET default_transaction_read_only;
\set VERBOSITY default
SELECT key, state, response_status FROM idempotency.keys WHERE scope = 'pgi55' AND key LIKE 'ro\_%' ORDER BY key;

SELECT pgi55_indexes_ok();
DROP INDEX idempotency.pgi55_stuck, idempotency.pgi55_lower;
DELETE FROM idempotency.keys WHERE scope = 'pgi55';
DROP TABLE pgi55_log;
DROP FUNCTION pgi55_done(text, int), pgi55_indexes_ok(), pgi55_log_row();
