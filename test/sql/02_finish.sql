-- finish, checkpoint, release and lookup semantics.
CREATE EXTENSION IF NOT EXISTS pg_idempotency;
-- try(sql, token): runs a statement ($1 = token), returning its SQLSTATE and message (tokens
-- masked, as they are random) instead of failing the script.
CREATE FUNCTION pg_temp.try(sql text, token bigint DEFAULT NULL) RETURNS text LANGUAGE plpgsql AS $$
DECLARE result text; detail text;
BEGIN
  EXECUTE sql INTO result USING token;
  RETURN 'ok: ' || coalesce(result, 'NULL');
EXCEPTION WHEN OTHERS THEN
  GET STACKED DIAGNOSTICS detail = PG_EXCEPTION_DETAIL;
  RETURN SQLSTATE || ': ' || regexp_replace(SQLERRM || ' / ' || detail, '(token) -?[0-9]+', '\1 N', 'gi');
END $$;

-- finish stores the response and completes the key: true
SELECT token AS t FROM idempotency.claim('f', 'a') \gset
SELECT idempotency.finish('f', 'a', :t, 201, convert_to('{"id":7}', 'UTF8'), '{"location": "/payments/7"}');
SELECT state, response_status, convert_from(response_body, 'UTF8') AS body, response_headers,
       locked_until, completed_at IS NOT NULL AS completed, token = :t AS same_token
FROM idempotency.keys WHERE scope = 'f' AND key = 'a';

-- same token, same response again: false, nothing changes
SELECT completed_at AS first_completed FROM idempotency.keys WHERE scope = 'f' AND key = 'a' \gset
SELECT idempotency.finish('f', 'a', :t, 201, convert_to('{"id":7}', 'UTF8'), '{"location": "/payments/7"}');
SELECT completed_at = :'first_completed' AS unchanged FROM idempotency.keys WHERE scope = 'f' AND key = 'a';

-- same token, different response: IK002 (status, body or headers)
SELECT pg_temp.try($$SELECT idempotency.finish('f', 'a', $1, 500, convert_to('{"id":7}', 'UTF8'), '{"location": "/payments/7"}')$$, :t);
SELECT pg_temp.try($$SELECT idempotency.finish('f', 'a', $1, 201, convert_to('{"id":8}', 'UTF8'), '{"location": "/payments/7"}')$$, :t);
SELECT pg_temp.try($$SELECT idempotency.finish('f', 'a', $1, 201, convert_to('{"id":7}', 'UTF8'))$$, :t);
SELECT pg_temp.try($$SELECT idempotency.finish('f', 'a', $1, 201, NULL, '{"location": "/payments/7"}')$$, :t);
-- the detail names every part that differs
SELECT pg_temp.try($$SELECT idempotency.finish('f', 'a', $1, 500, convert_to('{"id":8}', 'UTF8'))$$, :t);
SELECT response_status, convert_from(response_body, 'UTF8') AS body FROM idempotency.keys WHERE scope = 'f' AND key = 'a';

-- headers are compared as JSON values, not text
SELECT token AS t FROM idempotency.claim('f', 'hdr') \gset
SELECT idempotency.finish('f', 'hdr', :t, 200, NULL, '{"a": 1, "b": 2}');
SELECT idempotency.finish('f', 'hdr', :t, 200, NULL, '{"b": 2,   "a": 1}');

-- a token that does not hold the key: IK001 (unknown key, wrong token, completed, expired)
SELECT pg_temp.try($$SELECT idempotency.finish('f', 'nope', 1, 200)$$);
SELECT token AS t FROM idempotency.claim('f', 'b') \gset
SELECT pg_temp.try($$SELECT idempotency.finish('f', 'b', $1, 200)$$, :t + 1);
SELECT pg_temp.try($$SELECT idempotency.checkpoint('f', 'a', $1, 'x')$$, :t);
SELECT pg_temp.try($$SELECT idempotency.release('f', 'a', $1)$$, :t);
SELECT token AS texp FROM idempotency.claim('f', 'short', NULL, '1 millisecond') \gset
SELECT pg_sleep(0.05);
SELECT pg_temp.try($$SELECT idempotency.finish('f', 'short', $1, 200)$$, :texp);
SELECT pg_temp.try($$SELECT idempotency.checkpoint('f', 'short', $1, 'x')$$, :texp);
SELECT pg_temp.try($$SELECT idempotency.release('f', 'short', $1)$$, :texp);

-- a slow holder whose lease ran out may still finish if nobody took over
SELECT token AS tslow FROM idempotency.claim('f', 'slow', NULL, NULL, '1 millisecond') \gset
SELECT pg_sleep(0.05);
SELECT idempotency.finish('f', 'slow', :tslow, 200, 'late but fine');
SELECT outcome, convert_from(response_body, 'UTF8') AS body FROM idempotency.claim('f', 'slow');

-- checkpoint records progress and renews the lease, returning the new end;
-- a NULL recovery point renews the lease and keeps the last one
SELECT token AS tc FROM idempotency.claim('f', 'multi', NULL, NULL, '1 second') \gset
SELECT idempotency.checkpoint('f', 'multi', :tc, 'step-1', '1 hour') = now() + interval '1 hour' AS returns_lease_end;
SELECT recovery_point, locked_until - now() > interval '59 minutes' AS renewed
FROM idempotency.keys WHERE scope = 'f' AND key = 'multi';
SET idempotency.default_lease = '2min';
SELECT idempotency.checkpoint('f', 'multi', :tc, 'step-2') = now() + interval '2 minutes' AS default_lease;
RESET idempotency.default_lease;
SELECT idempotency.checkpoint('f', 'multi', :tc, NULL) IS NOT NULL AS renewed_only;
SELECT recovery_point AS kept FROM idempotency.keys WHERE scope = 'f' AND key = 'multi';

-- release gives the key back: true, and a retry claims it afresh
SELECT token AS tr FROM idempotency.claim('f', 'rel') \gset
SELECT idempotency.checkpoint('f', 'rel', :tr, 'before-side-effect') IS NOT NULL AS ok;
SELECT pg_temp.try($$SELECT idempotency.release('f', 'rel', $1)$$, :tr);
SELECT count(*) AS rows_left FROM idempotency.keys WHERE scope = 'f' AND key = 'rel';
SELECT outcome, attempt, recovery_point FROM idempotency.claim('f', 'rel');
SELECT pg_temp.try($$SELECT idempotency.release('f', 'rel', $1)$$, :tr);

-- lookup: the row, or NULL when absent or expired; changes nothing
SELECT (k).scope, (k).key, (k).state, (k).response_status, (k).attempt
FROM (SELECT idempotency.lookup('f', 'a') AS k) s;
SELECT idempotency.lookup('f', 'absent') IS NULL AS absent;
SELECT idempotency.lookup('f', 'short') IS NULL AS expired;
SELECT count(*) AS expired_row_still_there FROM idempotency.keys WHERE scope = 'f' AND key = 'short';
SELECT scope, key, state FROM idempotency.lookup('f', 'b');
SELECT xmin AS before FROM idempotency.keys WHERE scope = 'f' AND key = 'b' \gset
SELECT NOT (idempotency.lookup('f', 'b') IS NULL) AS found;
SELECT xmin = :'before' AS untouched FROM idempotency.keys WHERE scope = 'f' AND key = 'b';
