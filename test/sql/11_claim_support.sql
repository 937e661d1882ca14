-- 1.2: claim's planner support function (extension/request/claim_support.cpp)
-- plans a call without the trailing arguments that only restate their
-- defaults: a constant NULL, or for wait a constant zero interval. What is
-- left must never be six arguments (a 1.0/1.1 call), and the call must mean
-- the same: the outcomes and the stored trace context below show it.
CREATE EXTENSION IF NOT EXISTS pg_idempotency;
\set tc '00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01'

-- The planned call, as EXPLAIN VERBOSE prints it (Function Call line only).
CREATE FUNCTION pg_temp.planned(query text) RETURNS SETOF text LANGUAGE plpgsql AS $$
DECLARE
  line text;
BEGIN
  FOR line IN EXECUTE 'EXPLAIN (VERBOSE, COSTS OFF) ' || query LOOP
    IF line ~ 'Function Call:|Output: idempotency' THEN RETURN NEXT trim(line); END IF;
  END LOOP;
END
$$;

-- dropped: the defaults filled in, and the same spelled out
SELECT pg_temp.planned($$SELECT * FROM idempotency.claim('cs', 'k')$$);
SELECT pg_temp.planned($$SELECT * FROM idempotency.claim('cs', 'k', '\x01'::bytea)$$);
SELECT pg_temp.planned($$SELECT * FROM idempotency.claim('cs', 'k', NULL, NULL, NULL, '0', NULL)$$);
SELECT pg_temp.planned($$SELECT * FROM idempotency.claim('cs', 'k', wait => '0 seconds')$$);
SELECT pg_temp.planned($$SELECT * FROM idempotency.claim('cs', 'k', ttl => '1 day')$$);
-- in a select list too
SELECT pg_temp.planned($$SELECT idempotency.claim('cs', 'k', '\x01'::bytea)$$);
-- kept: a wait that is not zero, a trace context, parameters (a prepared
-- statement's generic plan cannot know their values), and a call that would
-- end with six arguments
SELECT pg_temp.planned($$SELECT * FROM idempotency.claim('cs', 'k', wait => '1 second')$$);
SELECT pg_temp.planned($$SELECT * FROM idempotency.claim('cs', 'k', trace_context => '$$ || :'tc' || $$')$$);
SELECT pg_temp.planned($$SELECT * FROM idempotency.claim('cs', 'k', NULL, NULL, '1 minute', '1 second')$$);
PREPARE six(text, bytea, interval, interval, interval) AS
  SELECT outcome FROM idempotency.claim('cs', $1, $2, $3, $4, $5);
SET plan_cache_mode = force_generic_plan;
SELECT pg_temp.planned($$EXECUTE six('k', NULL, NULL, NULL, '0')$$);
RESET plan_cache_mode;

-- The same meaning: a key claimed with a trace context, finished, then
-- replayed through calls planned with 2, 3 and 7 arguments (the first two
-- rewritten) answers alike, with the stored context.
SELECT token AS t FROM idempotency.claim('cs', 'traced', '\x01'::bytea, trace_context => :'tc') \gset
SELECT idempotency.finish('cs', 'traced', :t, 201, '\x6f6b'::bytea);
SELECT outcome, response_status, trace_context = :'tc' AS stored_context FROM idempotency.claim('cs', 'traced');
SELECT outcome, response_status, trace_context = :'tc' AS stored_context FROM idempotency.claim('cs', 'traced', '\x01'::bytea);
SELECT outcome, response_status, trace_context = :'tc' AS stored_context
FROM idempotency.claim('cs', 'traced', '\x01'::bytea, NULL, NULL, '1 second', NULL);
SELECT outcome FROM idempotency.claim('cs', 'traced', '\x02'::bytea);  -- mismatch, rewritten
SELECT (idempotency.claim('cs', 'traced')).outcome;                     -- select list, rewritten
-- a new key through a rewritten call stores no context (the default)
SELECT outcome FROM idempotency.claim('cs', 'plain', '\x01'::bytea);
SELECT trace_context IS NULL AS no_context FROM idempotency.keys WHERE scope = 'cs' AND key = 'plain';
DELETE FROM idempotency.keys WHERE scope = 'cs';
