-- Every error row of the contract, with its SQLSTATE; each leaves the table as it was.
CREATE EXTENSION IF NOT EXISTS pg_idempotency;
CREATE FUNCTION pg_temp.try(sql text) RETURNS text LANGUAGE plpgsql AS $$
BEGIN
  EXECUTE sql;
  RETURN 'ok';
EXCEPTION WHEN OTHERS THEN
  RETURN SQLSTATE || ': ' || regexp_replace(SQLERRM, 'token -?[0-9]+', 'token N', 'g');
END $$;
CREATE FUNCTION pg_temp.table_digest() RETURNS text LANGUAGE sql AS
  $$ SELECT md5(coalesce(string_agg(k::text, '|' ORDER BY scope, key), '')) FROM idempotency.keys k $$;

SELECT token AS t FROM idempotency.claim('e', 'held') \gset
SELECT pg_temp.table_digest() AS before \gset

-- 22004: NULL scope, key, token or response_status
SELECT pg_temp.try($$SELECT idempotency.claim(NULL, 'k')$$);
SELECT pg_temp.try($$SELECT idempotency.claim('e', NULL)$$);
SELECT pg_temp.try($$SELECT idempotency.finish(NULL, 'held', 1, 200)$$);
SELECT pg_temp.try($$SELECT idempotency.finish('e', 'held', NULL, 200)$$);
SELECT pg_temp.try(format($$SELECT idempotency.finish('e', 'held', %s, NULL)$$, :t));
SELECT pg_temp.try($$SELECT idempotency.checkpoint('e', 'held', NULL, 'x')$$);
SELECT pg_temp.try($$SELECT idempotency.release('e', NULL, 1)$$);
SELECT pg_temp.try($$SELECT idempotency.release('e', 'held', NULL)$$);
SELECT pg_temp.try($$SELECT idempotency.lookup(NULL, 'held')$$);

-- 22023: empty or over-long scope or key, long fingerprint, bad intervals and batch size
SELECT pg_temp.try($$SELECT idempotency.claim('', 'k')$$);
SELECT pg_temp.try($$SELECT idempotency.claim('e', '')$$);
SELECT pg_temp.try($$SELECT idempotency.claim('e', repeat('k', 256))$$);
SELECT pg_temp.try($$SELECT idempotency.claim(repeat('s', 256), 'k')$$);
SELECT pg_temp.try($$SELECT idempotency.claim('e', repeat('é', 128))$$);  -- 256 bytes
SELECT pg_temp.try($$SELECT idempotency.claim('e', 'k', decode(repeat('00', 65), 'hex'))$$);
SELECT pg_temp.try($$SELECT idempotency.claim('e', 'k', NULL, '0')$$);
SELECT pg_temp.try($$SELECT idempotency.claim('e', 'k', NULL, '-1 hour')$$);
SELECT pg_temp.try($$SELECT idempotency.claim('e', 'k', NULL, NULL, '0')$$);
SELECT pg_temp.try($$SELECT idempotency.claim('e', 'k', NULL, NULL, '-1 second')$$);
SELECT pg_temp.try($$SELECT idempotency.claim('e', 'k', NULL, NULL, NULL, '-1 second')$$);
SELECT pg_temp.try($$SELECT idempotency.claim('e', 'k', NULL, '1000000 years')$$);
SELECT pg_temp.try(format($$SELECT idempotency.checkpoint('e', 'held', %s, 'x', '0')$$, :t));
SELECT pg_temp.try($$SELECT idempotency.finish('e', '', 1, 200)$$);
SELECT pg_temp.try($$SELECT idempotency.lookup('e', repeat('k', 256))$$);
SELECT pg_temp.try($$SELECT idempotency.sweep(0)$$);
SELECT pg_temp.try($$SELECT idempotency.sweep(-5)$$);

-- 54000: response body + headers larger than idempotency.max_response_size
SET idempotency.max_response_size = '1kB';
SELECT pg_temp.try(format($$SELECT idempotency.finish('e', 'held', %s, 200, convert_to(repeat('x', 1025), 'UTF8'))$$, :t));
SELECT pg_temp.try(format($$SELECT idempotency.finish('e', 'held', %s, 200, convert_to(repeat('x', 1000), 'UTF8'), jsonb_build_object('h', repeat('y', 100)))$$, :t));
RESET idempotency.max_response_size;

-- IK001 and IK002 are covered in 02_finish; one each here for the table check
SELECT pg_temp.try($$SELECT idempotency.finish('e', 'held', 42, 200)$$);

-- nothing stored changed
SELECT pg_temp.table_digest() = :'before' AS unchanged;

-- the limits themselves are fine: 255 bytes, 64-byte fingerprint, 0 wait, exactly max size
SELECT outcome FROM idempotency.claim('e', repeat('k', 255));
SELECT outcome FROM idempotency.claim(repeat('s', 255), 'k');
SELECT outcome FROM idempotency.claim('e', repeat('é', 127) || 'x');
SELECT outcome FROM idempotency.claim('e', 'fp64', decode(repeat('ab', 64), 'hex'));
SELECT outcome FROM idempotency.claim('e', 'fp0', ''::bytea);
SELECT outcome FROM idempotency.claim('e', 'wait0', NULL, NULL, NULL, '0');
SET idempotency.max_response_size = '1kB';
SELECT idempotency.finish('e', 'held', :t, 200, convert_to(repeat('x', 1024), 'UTF8'));
RESET idempotency.max_response_size;

-- the error messages name the key and say what to do
\set VERBOSITY default
SELECT idempotency.claim('e', repeat('k', 300));
SELECT idempotency.finish('e', 'held', 42, 200);
SELECT idempotency.claim('e', 'k', NULL, '-1 hour');

-- settings are checked like any GUC, and the prefix is reserved
SET idempotency.default_ttl = '0';
SET idempotency.no_such_setting = 1;
