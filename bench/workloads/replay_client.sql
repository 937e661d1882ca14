-- 2. replay, the C++ client's statement (cxx-client/src/client.cpp, prepared
-- mode): nine named columns from claim in FROM, with ttl, lease and wait as
-- parameters (-D lease=30s -D wait=0), so the plan keeps all its arguments
\set n random(1, :nreplay)
SELECT c.outcome::text, c.token, c.attempt, c.recovery_point, c.response_status, c.response_headers, c.response_body, c.expires_at, c.locked_until FROM idempotency.claim('replay', :n, '\xf50d36c1739463e571da8e929fdeb3bc35c5bf86051c653d6a61deedcb10944e'::bytea, :ttl::interval, :lease::interval, :wait::interval) AS c;
