-- The key and the business write commit or roll back together.
CREATE EXTENSION IF NOT EXISTS pg_idempotency;
CREATE TABLE payments (id serial PRIMARY KEY, key text UNIQUE, amount int);

-- rollback undoes a claim as if it had never been called
BEGIN;
SELECT outcome FROM idempotency.claim('tx', 'pay-1');
INSERT INTO payments (key, amount) VALUES ('pay-1', 100);
ROLLBACK;
SELECT count(*) AS keys FROM idempotency.keys WHERE scope = 'tx';
SELECT count(*) AS payments FROM payments;

-- the retry claims afresh, and claim + work + finish commit together
BEGIN;
SELECT outcome, attempt FROM idempotency.claim('tx', 'pay-1') \gset
SELECT token AS t FROM idempotency.lookup('tx', 'pay-1') \gset
INSERT INTO payments (key, amount) VALUES ('pay-1', 100) RETURNING id AS payment_id \gset
SELECT idempotency.finish('tx', 'pay-1', :t, 201, convert_to(format('{"id":%s}', :payment_id), 'UTF8'));
COMMIT;
\echo :outcome :attempt
SELECT outcome, convert_from(response_body, 'UTF8') = format('{"id":%s}', (SELECT id FROM payments WHERE key = 'pay-1')) AS replays_the_payment
FROM idempotency.claim('tx', 'pay-1');

-- a rolled-back finish leaves the key in_progress with its holder
SELECT token AS t2 FROM idempotency.claim('tx', 'pay-2') \gset
BEGIN;
SELECT idempotency.finish('tx', 'pay-2', :t2, 500);
ROLLBACK;
SELECT state, response_status FROM idempotency.keys WHERE scope = 'tx' AND key = 'pay-2';
-- a rolled-back release too
BEGIN;
SELECT idempotency.release('tx', 'pay-2', :t2);
ROLLBACK;
SELECT state FROM idempotency.keys WHERE scope = 'tx' AND key = 'pay-2';
-- an error inside the transaction takes the claim with it
BEGIN;
SELECT outcome FROM idempotency.claim('tx', 'pay-3');
SELECT 1 / 0;
ROLLBACK;
SELECT idempotency.lookup('tx', 'pay-3') IS NULL AS gone;
-- savepoints: a claim rolled back to a savepoint is gone, the key lock with it
BEGIN;
SAVEPOINT s;
SELECT outcome FROM idempotency.claim('tx', 'pay-4');
ROLLBACK TO SAVEPOINT s;
SELECT outcome FROM idempotency.claim('tx', 'pay-4');
COMMIT;

-- finish is a HOT update: it changes no indexed column
SELECT pg_stat_force_next_flush();
SELECT n_tup_hot_upd AS hot_before, n_tup_upd AS upd_before
FROM pg_stat_user_tables WHERE relid = 'idempotency.keys'::regclass \gset
SELECT count(*) FROM (
  SELECT idempotency.finish('hot', 'k' || i, (idempotency.claim('hot', 'k' || i)).token, 200, 'body')
  FROM generate_series(1, 50) i) s;
SELECT pg_stat_force_next_flush();
SELECT n_tup_upd - :upd_before AS updates, n_tup_hot_upd - :hot_before AS hot_updates
FROM pg_stat_user_tables WHERE relid = 'idempotency.keys'::regclass;

-- claim inside REPEATABLE READ sees its own snapshot; the contract allows 40001 on races only
BEGIN ISOLATION LEVEL REPEATABLE READ;
SELECT outcome FROM idempotency.claim('tx', 'rr');
SELECT outcome FROM idempotency.claim('tx', 'pay-1');
COMMIT;
DROP TABLE payments;
