-- business transaction: claim + co-located insert + finish for one tenant (one shard, one worker)
\set k random(1, 9000000000000000000)
\set t random(1, 1000)
\set amount random(1, 100000)
BEGIN;
SELECT token FROM idempotency.claim('tenant' || :t, :k, '\xf50d36c1739463e571da8e929fdeb3bc35c5bf86051c653d6a61deedcb10944e'::bytea) \gset
INSERT INTO app.payments (tenant, amount, currency) VALUES ('tenant' || :t, :amount, 'EUR');
SELECT idempotency.finish('tenant' || :t, :k, :token, 201, '\x7b226964223a31323334352c22616d6f756e74223a3130302c2263757272656e6379223a22455552222c22737461747573223a22737563636565646564227d'::bytea, '{"content-type": "application/json"}'::jsonb);
COMMIT;
