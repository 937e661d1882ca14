-- 2. baseline: primary-key SELECT of the same completed row
\set n random(1, :nreplay)
SELECT * FROM idempotency.keys WHERE scope = 'replay' AND key = :n;
