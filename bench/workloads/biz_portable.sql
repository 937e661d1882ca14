-- 3. business transaction with the key calls (portable edition, database "portable")
\set k random(1, 9000000000000000000)
\set amount random(1, 100000)
BEGIN;
SELECT token FROM idempotency.claim('pay', :k, '\xf50d36c1739463e571da8e929fdeb3bc35c5bf86051c653d6a61deedcb10944e'::bytea) \gset
INSERT INTO bench.payments (amount, currency) VALUES (:amount, 'EUR');
SELECT idempotency.finish('pay', :k, :token, 201, '\x7b226964223a31323334352c22616d6f756e74223a3130302c2263757272656e6379223a22455552222c22737461747573223a22737563636565646564227d'::bytea, '{"content-type": "application/json"}'::jsonb);
COMMIT;
