-- fingerprint() canonical form, and sweep().
CREATE EXTENSION IF NOT EXISTS pg_idempotency;

-- SHA-256, 32 bytes
SELECT length(idempotency.fingerprint('{"a": 1}')) AS bytes;
SELECT idempotency.fingerprint('{"a": 1}') = sha256(convert_to('{"a":1}', 'UTF8')) AS is_sha256_of_compact_json;
-- key order, white space, duplicate keys and number spelling do not matter
SELECT idempotency.fingerprint('{"amount": 100, "currency": "EUR"}')
     = idempotency.fingerprint(E'{ "currency":"EUR",\n  "amount":1e2 }') AS same;
SELECT idempotency.fingerprint('{"a": 1.50}') = idempotency.fingerprint('{"a": 1.5}') AS same_number;
SELECT idempotency.fingerprint('{"a": 1, "a": 2}') = idempotency.fingerprint('{"a": 2}') AS last_key_wins;
SELECT idempotency.fingerprint('[{"x": [1, 2, {"y": null}]}, true, "s"]')
     = idempotency.fingerprint('[ {"x":[1,2,{"y":null}]} , true , "s" ]') AS nested;
-- values, types, array order and string content do matter
SELECT idempotency.fingerprint('{"a": 1}') = idempotency.fingerprint('{"a": "1"}') AS number_vs_string;
SELECT idempotency.fingerprint('[1, 2]') = idempotency.fingerprint('[2, 1]') AS array_order;
SELECT idempotency.fingerprint('{"a": "x"}') = idempotency.fingerprint('{"a": "X"}') AS case;
SELECT idempotency.fingerprint('{"a": {"b": 1}}') = idempotency.fingerprint('{"a": [{"b": 1}]}') AS shape;
SELECT idempotency.fingerprint('"s"') = idempotency.fingerprint('["s"]') AS scalar_vs_array;
SELECT idempotency.fingerprint('{"a\"b": "c\nd"}') = sha256(convert_to(E'{"a\\"b":"c\\nd"}', 'UTF8')) AS escaped;
-- scalars
SELECT idempotency.fingerprint('null') = sha256('null') AS null_scalar,
       idempotency.fingerprint('true') = sha256('true') AS true_scalar,
       idempotency.fingerprint('12.000') = sha256('12') AS number_scalar;
SELECT idempotency.fingerprint(NULL) IS NULL AS null_in_null_out;

-- sweep(): deletes expired rows, never an in_progress row whose lease runs on
SELECT idempotency.sweep(1000000) >= 0 AS cleared_earlier_tests;
BEGIN;
SELECT token AS t FROM idempotency.claim('sw', 'done', NULL, '1 millisecond') \gset
SELECT idempotency.finish('sw', 'done', :t, 200);
COMMIT;
SELECT outcome FROM idempotency.claim('sw', 'open-lease-over', NULL, '1 millisecond', '1 millisecond');
SELECT outcome FROM idempotency.claim('sw', 'open-leased', NULL, '1 millisecond', '1 hour');
SELECT outcome FROM idempotency.claim('sw', 'live', NULL, '1 hour');
SELECT count(*) FROM (SELECT idempotency.claim('sw', 'bulk-' || i, NULL, '1 millisecond', '1 millisecond') FROM generate_series(1, 25) i) s;
SELECT pg_sleep(0.05);
SELECT idempotency.sweep(10) AS first_batch;
SELECT idempotency.sweep() AS rest;
SELECT idempotency.sweep() AS nothing_left;
SELECT key, state FROM idempotency.keys WHERE scope = 'sw' ORDER BY key;
-- the leased in_progress row is swept once its lease is over
UPDATE idempotency.keys SET locked_until = now() - interval '1 second' WHERE scope = 'sw' AND key = 'open-leased';
SELECT idempotency.sweep() AS lease_over_now;
SELECT key FROM idempotency.keys WHERE scope = 'sw' ORDER BY key;
-- sweep() runs in the caller's transaction
SELECT outcome FROM idempotency.claim('sw', 'undo', NULL, '1 millisecond', '1 millisecond');
SELECT pg_sleep(0.05);
BEGIN;
SELECT idempotency.sweep() AS swept_in_txn;
ROLLBACK;
SELECT count(*) AS back_after_rollback FROM idempotency.keys WHERE scope = 'sw' AND key = 'undo';
