-- 2. replay, scalar form: SELECT claim(...) in the select list, no function scan (pg_idempotency)
\set n random(1, :nreplay)
SELECT idempotency.claim('replay', :n, '\xf50d36c1739463e571da8e929fdeb3bc35c5bf86051c653d6a61deedcb10944e'::bytea);
