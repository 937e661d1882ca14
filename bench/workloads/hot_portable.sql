-- 4. contention: 8 clients on 64 hot keys with random duplicates (portable edition, database "portable")
\set slot random(1, 64)
BEGIN;
SELECT s.k, coalesce(c.token, 0) AS token, (c.outcome = 'claimed')::int AS claimed
  FROM (SELECT CAST(:slot AS text) || '.' || (extract(epoch FROM clock_timestamp()) * 2)::bigint AS k) s,
       LATERAL idempotency.claim('hot', s.k, '\xf50d36c1739463e571da8e929fdeb3bc35c5bf86051c653d6a61deedcb10944e'::bytea) c \gset
\if :claimed
INSERT INTO bench.payments (amount, currency) VALUES (:slot, 'EUR');
SELECT idempotency.finish('hot', :k, :token, 201, '\x7b226964223a31323334352c22616d6f756e74223a3130302c2263757272656e6379223a22455552222c22737461747573223a22737563636565646564227d'::bytea, '{"content-type": "application/json"}'::jsonb);
\endif
COMMIT;
