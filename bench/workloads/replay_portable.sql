-- 2. replay: claim of an already completed key (portable edition, database "portable")
\set n random(1, :nreplay)
SELECT * FROM idempotency.claim('replay', :n, '\xf50d36c1739463e571da8e929fdeb3bc35c5bf86051c653d6a61deedcb10944e'::bytea);
