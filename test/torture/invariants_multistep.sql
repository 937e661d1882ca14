-- Invariants after `torture multistep` (psql -v scope=... -v steps=N
-- [-v crash=1]). One row per check, with the number of violations (must be 0).
-- After a crash a holder may have died between its external call and its
-- checkpoint without recording its death: crash=1 allows one such call per
-- key and step.
\if :{?crash}
\else
\set crash 0
\endif
WITH k AS (SELECT * FROM idempotency.keys WHERE scope = :'scope'),
     e AS (SELECT key, step, count(*) AS n, max(seq) AS last_seq FROM torture.external WHERE scope = :'scope' GROUP BY key, step),
     c AS (SELECT key, step, count(*) AS n, min(seq) AS seq FROM torture.checkpoints WHERE scope = :'scope' GROUP BY key, step),
     d AS (SELECT key, step, count(*) AS n FROM torture.deaths WHERE scope = :'scope' GROUP BY key, step),
     s AS (SELECT * FROM torture.seen WHERE scope = :'scope')
SELECT 'a step checkpointed more than once' AS check, count(*) AS violations FROM c WHERE n > 1
UNION ALL
SELECT 'an external call repeated after its step was checkpointed', count(*)
  FROM e JOIN c USING (key, step) WHERE e.last_seq > c.seq
UNION ALL
SELECT 'external calls not accounted for by one checkpoint or a death', count(*)
  FROM e LEFT JOIN c USING (key, step) LEFT JOIN d USING (key, step)
 WHERE e.n < coalesce(c.n, 0) + coalesce(d.n, 0)
    OR e.n > coalesce(c.n, 0) + coalesce(d.n, 0) + :crash
UNION ALL
SELECT 'checkpoint without its external call', count(*)
  FROM c LEFT JOIN e USING (key, step) WHERE e.key IS NULL
UNION ALL
SELECT 'completed key missing a step', count(*)
  FROM k CROSS JOIN generate_series(1, :steps) AS g(step)
 WHERE k.state = 'completed' AND NOT EXISTS (SELECT 1 FROM c WHERE c.key = k.key AND c.step = g.step)
UNION ALL
SELECT 'completed key whose recovery point is not the last step', count(*)
  FROM k WHERE k.state = 'completed' AND k.recovery_point IS DISTINCT FROM 'step' || :steps
UNION ALL
SELECT 'recovery point behind its checkpoints', count(*)
  FROM k WHERE coalesce(substr(k.recovery_point, 5)::int, 0)
               <> coalesce((SELECT max(step) FROM c WHERE c.key = k.key), 0)
UNION ALL
SELECT 'acknowledged finish missing', count(*)
  FROM s LEFT JOIN k USING (key)
 WHERE s.kind = 'F' AND (k.state IS DISTINCT FROM 'completed' OR convert_from(k.response_body, 'UTF8') <> 'done')
UNION ALL
SELECT 'replay differs from the stored response', count(*)
  FROM s LEFT JOIN k USING (key)
 WHERE s.kind = 'R' AND convert_from(k.response_body, 'UTF8') IS DISTINCT FROM s.value;
