-- replay: claim of an already completed key (loaded by setup.sql: keys 1..:nreplay of tenant<key % 1000>)
\set n random(1, :nreplay)
SELECT * FROM idempotency.claim('tenant' || (:n % 1000), :n, '\xf50d36c1739463e571da8e929fdeb3bc35c5bf86051c653d6a61deedcb10944e'::bytea);
