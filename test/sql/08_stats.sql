-- idempotency.stats counters move as documented (the library is preloaded).
CREATE EXTENSION IF NOT EXISTS pg_idempotency;
CREATE TEMP TABLE before AS SELECT *, clock_timestamp() AS started FROM idempotency.stats;

-- claims +1 (a comment after \gset would be read as its arguments)
SELECT token AS t FROM idempotency.claim('st', 'a', '\x01') \gset
SELECT outcome FROM idempotency.claim('st', 'a', '\x01');                -- in_progress +1
SELECT outcome FROM idempotency.claim('st', 'a', '\x02');                -- mismatches +1
SELECT idempotency.finish('st', 'a', :t, 200);                           -- finishes +1
SELECT idempotency.finish('st', 'a', :t, 200);                           -- repeat: not counted
SELECT outcome FROM idempotency.claim('st', 'a', '\x01');                -- replays +1
SELECT outcome FROM idempotency.claim('st', 'a');                        -- replays +1
-- claims +1
SELECT token AS t2 FROM idempotency.claim('st', 'b', NULL, NULL, '1 millisecond') \gset
SELECT pg_sleep(0.05);
SELECT outcome, attempt FROM idempotency.claim('st', 'b');               -- claims +1, takeovers +1
SELECT token AS t3 FROM idempotency.lookup('st', 'b') \gset
SELECT idempotency.release('st', 'b', :t3);                              -- releases +1
SELECT outcome FROM idempotency.claim('st', 'c', NULL, '1 millisecond', '1 millisecond');  -- claims +1
SELECT pg_sleep(0.05);
SELECT idempotency.sweep() >= 1 AS swept_some \gset
\echo :swept_some

SELECT s.claims - b.claims AS claims, s.replays - b.replays AS replays,
       s.in_progress - b.in_progress AS in_progress, s.mismatches - b.mismatches AS mismatches,
       s.takeovers - b.takeovers AS takeovers, s.finishes - b.finishes AS finishes,
       s.releases - b.releases AS releases, s.swept - b.swept >= 1 AS swept,
       s.last_sweep_at >= b.started AS last_sweep_now
FROM idempotency.stats s, before b;
